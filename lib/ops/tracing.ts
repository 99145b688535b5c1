/**
 * Spans of the service's own work (a chunk commit, a job run, a webhook
 * delivery) through `@opentelemetry/api`. Deno's built-in OpenTelemetry
 * (`OTEL_DENO=true`, see docs/observability.md) registers itself as the
 * API's tracer provider and exports them over OTLP; without it the API's
 * no-op tracer makes each span a few function calls.
 */

import { type Attributes, SpanStatusCode, trace } from "@opentelemetry/api";

const tracer = trace.getTracer("tapedeck");

/**
 * Runs `work` inside a span named `name` (the active span while it runs),
 * records an exception and an error status when it throws, and ends the
 * span when it settles.
 */
export function withSpan<T>(
  name: string,
  attributes: Attributes,
  work: () => Promise<T>,
): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await work();
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: (err as Error)?.message ?? String(err),
      });
      throw err;
    } finally {
      span.end();
    }
  });
}
