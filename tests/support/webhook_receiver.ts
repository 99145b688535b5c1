/**
 * A webhook receiver for tests: a real HTTP server on 127.0.0.1 that keeps
 * every request it gets and answers as the test says (a status, or never:
 * `hang`), so retries, timeouts and outages can be staged.
 */

/** One request the receiver got. */
export interface ReceivedHook {
  headers: Headers;
  body: string;
  // deno-lint-ignore no-explicit-any
  json: any;
  at: number;
  /** The status answered (0 while hanging). */
  status: number;
}

/** How the receiver answers the next request: a status, or `hang` (no answer until closed). */
export type ReceiverAnswer = number | "hang";

/** A running receiver. */
export interface WebhookReceiver {
  url: string;
  received: ReceivedHook[];
  /** Decides each answer from the request's position (0-based) and the request. */
  answer: (n: number, hook: ReceivedHook) => ReceiverAnswer;
  /** Resolves the first received request `match` accepts (polling every 20 ms). */
  waitFor(
    match: (hook: ReceivedHook) => boolean,
    timeoutMs?: number,
    what?: string,
  ): Promise<ReceivedHook>;
  /** Releases hanging requests and stops the server. */
  close(): Promise<void>;
}

/** Starts a receiver that answers 200 unless told otherwise. */
export function startReceiver(
  answer: (n: number, hook: ReceivedHook) => ReceiverAnswer = () => 200,
): WebhookReceiver {
  const received: ReceivedHook[] = [];
  const release = Promise.withResolvers<void>();
  const receiver: WebhookReceiver = {
    url: "",
    received,
    answer,
    async waitFor(match, timeoutMs = 30_000, what = "a webhook") {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const hit = received.find(match);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(
        `${what} did not arrive within ${timeoutMs} ms; got ${
          JSON.stringify(received.map((h) => [h.json?.type, h.status]))
        }`,
      );
    },
    async close() {
      release.resolve();
      await server.shutdown();
    },
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const body = await req.text();
      let json: unknown = null;
      try {
        json = JSON.parse(body);
      } catch {
        json = null;
      }
      const hook: ReceivedHook = {
        headers: req.headers,
        body,
        json,
        at: Date.now(),
        status: 0,
      };
      const n = received.length;
      received.push(hook);
      const answer = receiver.answer(n, hook);
      if (answer === "hang") {
        await release.promise;
        return new Response("released", { status: 503 });
      }
      hook.status = answer;
      return new Response(answer >= 300 ? "receiver says no" : "ok", {
        status: answer,
      });
    },
  );
  receiver.url = `http://127.0.0.1:${server.addr.port}/hooks`;
  return receiver;
}
