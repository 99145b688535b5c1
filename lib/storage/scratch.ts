/**
 * Local scratch space, on every backend: ffmpeg work folders and chunk
 * spool files. Nothing in it is ever the only copy of anything kept, so
 * it may be lost at any moment.
 */

import { join } from "node:path";

/** Scratch folders and files under one local root. */
export class ScratchSpace {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** A fresh folder for processing this recording. */
  async makeWorkDir(videoId: string): Promise<string> {
    // A fresh folder per run, so an ffmpeg left over from a crashed run can
    // never write into the files of the next one.
    const dir = join(
      this.root,
      "work",
      `${videoId}.${crypto.randomUUID().slice(0, 8)}`,
    );
    await Deno.mkdir(dir, { recursive: true });
    return dir;
  }

  /** Removes a folder made by {@link makeWorkDir}. */
  async removeWorkDir(path: string): Promise<void> {
    await Deno.remove(path, { recursive: true }).catch(() => {});
  }

  /** A new file path for spooling a body (its folder exists). */
  async spoolPath(): Promise<string> {
    const dir = join(this.root, "spool");
    await Deno.mkdir(dir, { recursive: true });
    return join(dir, crypto.randomUUID());
  }

  /** Removes every work folder and spool file (when nothing is in flight). */
  async removeAll(): Promise<void> {
    await Promise.all(
      ["work", "spool"].map((name) =>
        Deno.remove(join(this.root, name), { recursive: true }).catch(() => {})
      ),
    );
  }
}
