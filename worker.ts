/**
 * Runs only the processing worker, as its own process. Needs a KV that other
 * processes can share (a KV Connect URL in KV_PATH); with a local KV file,
 * run the worker inside the server instead (RUN_WORKER=true, the default).
 */

import { loadConfig } from "./lib/core/config.ts";
import { closeContext, openContext } from "./lib/core/context.ts";
import { describeTools, resolveTools } from "./lib/processing/ffmpeg.ts";
import { JobWorker } from "./lib/jobs/worker.ts";

if (import.meta.main) {
  const config = loadConfig();
  const tools = await resolveTools(config.ffmpegPath, config.ffprobePath, {
    nice: config.ffmpegNice,
    maxMemoryBytes: config.ffmpegMaxMemoryBytes,
  });
  const ctx = await openContext(config);
  ctx.log.info(describeTools(tools));
  const worker = new JobWorker(ctx, tools);
  await worker.start();
  Deno.cron("tapedeck job sweep", "* * * * *", () => worker.wake());
  ctx.log.info(`tapedeck worker ${worker.id} running; KV at ${config.kvPath}`);
  const stop = async () => {
    await worker.stop();
    closeContext(ctx);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
