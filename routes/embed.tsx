import { type Context, Hono } from "hono";
import { renderToString } from "preact-render-to-string";
import type { VNode } from "preact";
import { EmbedPlayer } from "../components/embed/embed_player.tsx";
import { displayTitle } from "../common/title.ts";
import { toRecordingView } from "../common/recording_view.ts";
import type { AppContext } from "../lib/core/context.ts";
import type { Config } from "../lib/core/config.ts";
import { authorizeView } from "../lib/http/access.ts";
import { ensureAssets } from "../lib/http/assets.ts";
import { STATUS_OF, typedError } from "../lib/http/on_error.ts";
import { getRecording } from "../lib/recordings/ids.ts";

/**
 * The embed page's policy: its own stylesheet, poster and media, nothing
 * else, and only the frames of EMBED_ORIGINS may show it.
 */
function embedPolicy(config: Config): string {
  const ancestors = config.embedOrigins.length > 0
    ? config.embedOrigins.join(" ")
    : "'none'";
  return [
    "default-src 'none'",
    "style-src 'self'",
    "img-src 'self'",
    "media-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    `frame-ancestors ${ancestors}`,
  ].join("; ");
}

async function embedHtml(
  config: Config,
  title: string,
  body: VNode,
  status = 200,
): Promise<Response> {
  const assets = await ensureAssets();
  const markup = renderToString(
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="dark" />
        <title>{`${title} · tapedeck`}</title>
        <link rel="stylesheet" href={assets.style} />
      </head>
      <body class="embed">
        <main>{body}</main>
      </body>
    </html>,
  );
  return new Response(`<!DOCTYPE html>\n${markup}`, {
    status,
    headers: {
      "Content-Type": "text/html; charset=utf-8",
      "Content-Security-Policy": embedPolicy(config),
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      "Cache-Control": "no-store",
    },
  });
}

/**
 * `/embed/<id>`: a minimal player for an iframe on another site. A private
 * recording needs `?token=` (its upload token), which its file URLs then
 * carry; errors are small HTML pages the frame can show.
 */
export function embedRoutes(ctx: AppContext): Hono {
  const embed = new Hono({ strict: false });

  embed.get("/embed/:id", async (c) => {
    const id = c.req.param("id");
    await authorizeView(ctx, id, c.req.raw);
    const rec = toRecordingView(await getRecording(ctx, id));
    const token = ctx.config.privateRecordings
      ? new URL(c.req.url).searchParams.get("token") ?? undefined
      : undefined;
    return await embedHtml(
      ctx.config,
      displayTitle(rec, false),
      <EmbedPlayer recording={rec} token={token} />,
    );
  });

  embed.onError(async (err: Error, c: Context) => {
    const typed = await typedError(err, ctx);
    if (!typed) {
      ctx.log.error(`${c.req.method} ${c.req.path} failed`, {
        error: err.stack ?? String(err),
      });
    }
    const status = typed ? STATUS_OF[typed.kind] : 500;
    return await embedHtml(
      ctx.config,
      status === 404 ? "Not found" : "Unavailable",
      <p class="embed-wait" id="error-message">
        {status === 404
          ? "There is no such recording."
          : status === 401
          ? "This recording is private."
          : "The video cannot be shown right now."}
      </p>,
      status,
    );
  });
  return embed;
}
