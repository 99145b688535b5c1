/**
 * Runs only the processing worker, as its own process: a worker pool is M of
 * these next to N servers started with RUN_WORKER=false. They need a KV that
 * processes share (`KV_PATH=postgres://...` or a KV Connect URL; SHARED_KV is
 * then on) and storage they share (STORAGE_URL); a shared KV with local-disk
 * storage is refused at start-up. With a local KV file, run the worker inside
 * the server instead (RUN_WORKER=true, the default).
 */

import { loadConfig } from "./lib/core/config.ts";
import { closeContext, openContext } from "./lib/core/context.ts";
import { ConfigError } from "./lib/core/errors.ts";
import { everyMinute } from "./lib/core/every_minute.ts";
import { describeKvPath } from "./lib/kv/open.ts";
import { describeTools, resolveTools } from "./lib/processing/ffmpeg.ts";
import { JobWorker } from "./lib/jobs/worker.ts";

if (import.meta.main) {
  try {
    const config = loadConfig();
    const tools = await resolveTools(config.ffmpegPath, config.ffprobePath, {
      nice: config.ffmpegNice,
      maxMemoryBytes: config.ffmpegMaxMemoryBytes,
    });
    const ctx = await openContext(config);
    ctx.log.info(describeTools(tools));
    const worker = new JobWorker(ctx, tools);
    ctx.jobs = worker;
    await worker.start();
    const wakeUps = everyMinute("tapedeck job sweep", () => worker.wake());
    ctx.log.info(wakeUps.description);
    ctx.log.info(
      `tapedeck worker ${worker.id} running; KV at ${
        describeKvPath(config.kvPath)
      }`,
    );
    let stopping = false;
    const stop = async () => {
      if (stopping) return;
      stopping = true;
      wakeUps.stop();
      await worker.stop();
      await closeContext(ctx);
      Deno.exit(0);
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`tapedeck worker cannot start: ${err.message}`);
    Deno.exit(1);
  }
}
