/**
 * Routes the app serves that are deliberately not in the OpenAPI document:
 * pages for people, their assets, and the SDK's static files. Keyed as
 * Hono registers them (`app.routes`: method and path pattern).
 * tests/openapi_test.ts fails for any served route that is neither
 * documented nor listed here, and for any entry here that is not served.
 */

/** A served route outside the API, and why. */
export interface NotApiRoute {
  /** As Hono registers it: `GET`, `POST`, ... or `ALL` (a 405 fallback). */
  method: string;
  /** Hono's path pattern, e.g. `/videos/:id`. */
  path: string;
  why: string;
}

/** Every served route that is not API. */
export const NOT_API_ROUTES: NotApiRoute[] = [
  { method: "GET", path: "/", why: "the dashboard page" },
  { method: "GET", path: "/videos/:id", why: "a recording's page" },
  { method: "GET", path: "/record", why: "the recorder page" },
  { method: "GET", path: "/login", why: "the login page" },
  { method: "POST", path: "/login", why: "the login page's form" },
  { method: "GET", path: "/logout", why: "logging out of the pages" },
  { method: "GET", path: "/static/*", why: "the pages' scripts and styles" },
  {
    method: "GET",
    path: "/embed/:id",
    why: "the player page other sites put in an iframe (HTML)",
  },
  {
    method: "GET",
    path: "/sdk/:name",
    why: "the recorder SDK's module and types: static files for browsers",
  },
  {
    method: "HEAD",
    path: "/sdk/:name",
    why: "the recorder SDK's files, headers only",
  },
  { method: "ALL", path: "/sdk/:name", why: "405 for other methods" },
];
