import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { VNode } from "preact";
import { renderToString } from "preact-render-to-string";
import { Island } from "../components/island.tsx";
import { Layout, type Section } from "../components/layout.tsx";
import Dashboard from "../islands/dashboard.tsx";
import Recorder from "../islands/recorder.tsx";
import RecordingDetail from "../islands/recording_detail.tsx";
import {
  apiKeysEnabled,
  authorizeView,
  isSameOrigin,
  logIn,
  requireApiKey,
  sessionCookie,
} from "../lib/http/access.ts";
import {
  type AssetManifest,
  ensureAssets,
  serveStaticFile,
} from "../lib/http/assets.ts";
import type { AppContext } from "../lib/core/context.ts";
import {
  loadDashboard,
  loadRecordingPage,
  parsePageQuery,
} from "../lib/http/dashboard.ts";
import { AppError, ForbiddenError, TooLargeError } from "../lib/core/errors.ts";
import { STATUS_OF, typedError } from "../lib/http/on_error.ts";
import { displayTitle } from "../common/title.ts";

/** Pages load only their own files and the bundle; no inline code anywhere. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "media-src 'self' blob:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const RECORDER_TIMESLICE_MS = 1000;

function html(
  page: { title: string; section: Section; assets: AssetManifest; body: VNode },
  status = 200,
): Response {
  const markup = renderToString(
    <Layout title={page.title} section={page.section} assets={page.assets}>
      {page.body}
    </Layout>,
  );
  return new Response(`<!DOCTYPE html>\n${markup}`, {
    status,
    headers: {
      "Content-Type": "text/html; charset=utf-8",
      "Content-Security-Policy": CONTENT_SECURITY_POLICY,
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "same-origin",
      "Cache-Control": "no-store",
    },
  });
}

async function errorPage(
  ctx: AppContext,
  err: Error,
  c: Context,
): Promise<Response> {
  const typed = await typedError(err, ctx);
  if (!typed) {
    ctx.log.error(`${c.req.method} ${c.req.path} failed`, {
      error: err.stack ?? String(err),
    });
  }
  const status = typed ? STATUS_OF[typed.kind] : 500;
  return html({
    title: status === 404 ? "Not found" : "Error",
    section: "none",
    assets: await ensureAssets(),
    body: (
      <section class="error-page">
        <h1>{status === 404 ? "Not found" : "Something went wrong"}</h1>
        <p id="error-message">
          {typed
            ? typed.message
            : "The server hit an unexpected error. Try again in a moment."}
        </p>
        <p>
          {status === 401
            ? <a href="/login">Log in with an API key</a>
            : <a href="/">Back to the recordings</a>}
        </p>
      </section>
    ),
  }, status);
}

/** Server-rendered pages (`/`, `/videos/<id>`, `/record`) and `/static/*`. */
export function pageRoutes(ctx: AppContext): Hono {
  const pages = new Hono({ strict: false });

  pages.get("/", async (c) => {
    requireApiKey(ctx.config, c.req.raw);
    const query = parsePageQuery(new URL(c.req.url).searchParams);
    const [view, assets] = await Promise.all([
      loadDashboard(ctx, query),
      ensureAssets(),
    ]);
    return html({
      title: "Recordings",
      section: "recordings",
      assets,
      body: <Island name="dashboard" component={Dashboard} props={view} />,
    });
  });

  pages.get("/videos/:id", async (c) => {
    await authorizeView(ctx, c.req.param("id"), c.req.raw);
    const [view, assets] = await Promise.all([
      loadRecordingPage(ctx, c.req.param("id")),
      ensureAssets(),
    ]);
    return html({
      title: displayTitle(view.recording, false),
      section: "none",
      assets,
      body: (
        <Island
          name="recording_detail"
          component={RecordingDetail}
          props={{
            ...view,
            origin: new URL(c.req.url).origin,
            embeddable: ctx.config.embedOrigins.length > 0,
            private: ctx.config.privateRecordings,
          }}
        />
      ),
    });
  });

  pages.get("/record", async (c) => {
    requireApiKey(ctx.config, c.req.raw);
    return html({
      title: "Record",
      section: "record",
      assets: await ensureAssets(),
      body: (
        <>
          <Island
            name="recorder"
            component={Recorder}
            props={{ timesliceMs: RECORDER_TIMESLICE_MS }}
          />
          <noscript>
            <p class="error">
              The recorder needs JavaScript; the recordings list and players
              work without it.
            </p>
          </noscript>
        </>
      ),
    });
  });

  const loginPage = async (message?: string) =>
    html({
      title: "Log in",
      section: "none",
      assets: await ensureAssets(),
      body: (
        <section class="login">
          <h1>Log in</h1>
          {message && <p class="error" id="error-message">{message}</p>}
          <form method="post" action="/login">
            <label>
              API key <input type="password" name="key" required autofocus />
            </label>
            <button type="submit" class="button">Log in</button>
          </form>
        </section>
      ),
    }, message ? 401 : 200);

  pages.get(
    "/login",
    () =>
      apiKeysEnabled(ctx.config)
        ? loginPage()
        : new Response(null, { status: 303, headers: { Location: "/" } }),
  );

  pages.post(
    "/login",
    bodyLimit({
      maxSize: 8 * 1024,
      onError: () => {
        throw new TooLargeError("The login form is too large.");
      },
    }),
    async (c) => {
      // A form posted from another site (login CSRF) is refused.
      if (!isSameOrigin(c.req.raw)) {
        throw new ForbiddenError(
          "The login form must be sent from this server's own login page.",
        );
      }
      const form: Record<string, unknown> = await c.req.parseBody().catch(
        () => ({}),
      );
      const key = typeof form.key === "string" ? form.key.slice(0, 500) : "";
      try {
        const cookie = logIn(ctx.config, key, c.req.raw);
        return new Response(null, {
          status: 303,
          headers: { Location: "/", "Set-Cookie": cookie },
        });
      } catch (err) {
        if (err instanceof AppError) return loginPage(err.message);
        throw err;
      }
    },
  );

  pages.get("/logout", (c) =>
    new Response(null, {
      status: 303,
      headers: {
        Location: "/login",
        "Set-Cookie": sessionCookie(ctx.config, "", c.req.raw),
      },
    }));

  pages.get(
    "/static/*",
    (c) => serveStaticFile(c.req.raw, c.req.path.slice("/static/".length)),
  );

  pages.onError((err, c) => errorPage(ctx, err, c));
  return pages;
}
