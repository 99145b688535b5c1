/// <reference lib="dom" />
/**
 * The Web Lock a page holds on a recording for as long as it records or
 * resumes it, so another tab never resumes (and completes) a recording
 * that is still live. The browser releases the lock by itself when the
 * page goes away. Without Web Locks (Deno, old browsers) every call goes
 * through at once.
 */

/** The Web Lock a page holds while it records or resumes a recording. */
export function recordingLockName(videoId: string): string {
  return `tapedeck-recording:${videoId}`;
}

function locks(): LockManager | undefined {
  return typeof navigator !== "undefined" ? navigator.locks : undefined;
}

/**
 * Takes the recording's lock for this page (waiting for it if another page
 * holds it) and resolves with the function that releases it. Without Web
 * Locks, resolves at once with a no-op.
 */
export function holdRecordingLock(videoId: string): Promise<() => void> {
  const manager = locks();
  if (!manager) return Promise.resolve(() => {});
  return new Promise((resolve) => {
    manager.request(
      recordingLockName(videoId),
      () => new Promise<void>((release) => resolve(() => release())),
    ).catch(() => resolve(() => {}));
  });
}

/**
 * Runs `fn` holding the recording's lock. If another page holds it, calls
 * `onWaiting` and waits for it (until `signal` aborts).
 */
export async function withRecordingLock<T>(
  videoId: string,
  signal: AbortSignal,
  onWaiting: () => void,
  fn: () => Promise<T>,
): Promise<T> {
  const manager = locks();
  if (!manager) return await fn();
  const name = recordingLockName(videoId);
  const first = await manager.request(
    name,
    { ifAvailable: true },
    async (lock) => lock ? { value: await fn() } : null,
  );
  if (first) return first.value;
  onWaiting();
  return await manager.request(name, { signal }, () => fn());
}
