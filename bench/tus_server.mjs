/**
 * The peer: a stock tus server (`@tus/server` with `@tus/file-store`) on
 * Node.js, installed by the bench into bench/.peer. It stores each upload in
 * one file and does not flush it.
 *
 * Run: PEER_DIR=bench/.peer DATA_DIR=/tmp/x node bench/tus_server.mjs
 */

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const peer = createRequire(`${process.env.PEER_DIR}/package.json`);
const { Server } = await import(
  pathToFileURL(peer.resolve("@tus/server")).href
);
const { FileStore } = await import(
  pathToFileURL(peer.resolve("@tus/file-store")).href
);

const server = new Server({
  path: "/files",
  datastore: new FileStore({ directory: process.env.DATA_DIR }),
});
const http = server.listen({ host: "127.0.0.1", port: 0 }, () => {
  console.log(`tus listening on http://127.0.0.1:${http.address().port}/`);
});
process.on("SIGTERM", () => http.close(() => process.exit(0)));
