/**
 * One {@link LocalStorage} per data folder per process. Instances of the
 * app opened in one process on one folder (tests of several instances) get
 * the same object, so its per-recording append lock and its open data files
 * hold across them: two appenders of one process never write one data file
 * at once. It is released by the last instance that closes.
 */

import { resolve } from "node:path";
import { LocalStorage } from "./local.ts";

interface Held {
  storage: LocalStorage;
  users: number;
}

const held = new Map<string, Held>();
const keyOf = new WeakMap<LocalStorage, string>();

async function folderKey(dataDir: string): Promise<string> {
  try {
    return await Deno.realPath(dataDir);
  } catch {
    return resolve(dataDir);
  }
}

/**
 * The process's local storage of `dataDir` (made with these settings by the
 * first instance that opens it); give it back with
 * {@link releaseLocalStorage}.
 */
export async function openLocalStorage(
  dataDir: string,
  minFreeBytes: number,
  ingestCacheBytes: number,
): Promise<LocalStorage> {
  const key = await folderKey(dataDir);
  let entry = held.get(key);
  if (!entry) {
    entry = {
      storage: new LocalStorage(dataDir, minFreeBytes, ingestCacheBytes),
      users: 0,
    };
    held.set(key, entry);
    keyOf.set(entry.storage, key);
  }
  entry.users++;
  return entry.storage;
}

/**
 * Gives back a storage of {@link openLocalStorage}: its idle open files are
 * closed (a user still working reopens what it needs), and it is forgotten
 * once no instance holds it. A storage made otherwise is just closed.
 */
export function releaseLocalStorage(storage: LocalStorage): void {
  storage.close();
  const key = keyOf.get(storage);
  const entry = key === undefined ? undefined : held.get(key);
  if (!entry || entry.storage !== storage) return;
  if (--entry.users <= 0) held.delete(key!);
}
