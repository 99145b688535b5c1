/**
 * Debian's Prometheus for tests: `promtool check metrics` on a text, and a
 * throwaway server in a temp folder on a free loopback port that scrapes
 * one target every second.
 */

/** Whether the tests run in CI, where a missing Prometheus is a failure. */
export const IN_CI = (Deno.env.get("CI") ?? "") !== "" &&
  Deno.env.get("CI") !== "false";

function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (dir && Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // next
    }
  }
  return false;
}

/** Whether `prometheus` and `promtool` are installed. */
export function havePrometheus(): boolean {
  return onPath("prometheus") && onPath("promtool");
}

/**
 * `Deno.test` options for a test that needs Prometheus: ignored (with a
 * notice) when it is missing, except in CI where the test runs and fails.
 */
export function needsPrometheus(): { ignore: boolean } {
  const ignore = !havePrometheus() && !IN_CI;
  if (ignore) {
    console.warn(
      "IGNORED: prometheus/promtool are not installed (apt-get install prometheus)",
    );
  }
  return { ignore };
}

/** Runs `promtool check metrics` on `text`; resolves its exit code and output. */
export async function promtoolCheck(
  text: string,
): Promise<{ ok: boolean; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return {
    ok: out.success,
    output: dec.decode(out.stdout) + dec.decode(out.stderr),
  };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A running Prometheus. */
export interface TestPrometheus {
  /** Base URL of its HTTP API. */
  url: string;
  /** Runs an instant query; resolves `data.result`. */
  query(expr: string): Promise<
    { metric: Record<string, string>; value: [number, string] }[]
  >;
  /** Everything it printed. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts Prometheus scraping `target` (`host:port`) at `/metrics` every
 * second, with `bearer` as its API key when given.
 */
export async function startPrometheus(
  target: string,
  options: { bearer?: string } = {},
): Promise<TestPrometheus> {
  const dir = await Deno.makeTempDir({ prefix: "tapedeck-prom-" });
  const auth = options.bearer
    ? `\n    authorization:\n      type: Bearer\n      credentials: ${options.bearer}`
    : "";
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tapedeck
    metrics_path: /metrics
    static_configs:
      - targets: ["${target}"]${auth}
`,
  );
  const port = freePort();
  const child = new Deno.Command("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const dec = new TextDecoder();
  const pumps = Promise.all([child.stdout, child.stderr].map(async (s) => {
    for await (const piece of s) text += dec.decode(piece, { stream: true });
  }));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // gone
    }
    await child.status;
    await pumps;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 30_000;
  while (true) {
    try {
      const res = await fetch(`${url}/-/ready`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus did not become ready:\n${text}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    async query(expr) {
      const res = await fetch(
        `${url}/api/v1/query?query=${encodeURIComponent(expr)}`,
      );
      const body = await res.json();
      if (body.status !== "success") {
        throw new Error(`query ${expr} failed: ${JSON.stringify(body)}`);
      }
      return body.data.result;
    },
    output: () => text,
    stop,
  };
}
