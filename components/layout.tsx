import type { ComponentChildren } from "preact";
import type { AssetManifest } from "../lib/http/assets.ts";

/** Which top-level page is shown, for the navigation. */
export type Section = "recordings" | "record" | "none";

/** Props of {@link Layout}. */
export interface LayoutProps {
  title: string;
  assets: AssetManifest;
  section: Section;
  children: ComponentChildren;
}

/** The HTML document around every page: head, stylesheet, bundle and navigation. */
export function Layout({ title, assets, section, children }: LayoutProps) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="light dark" />
        <title>{`${title} · tapedeck`}</title>
        <link rel="icon" href="data:," />
        <link rel="stylesheet" href={assets.style} />
        {assets.script && <script type="module" src={assets.script} />}
      </head>
      <body>
        <header class="topbar">
          <a class="brand" href="/">tapedeck</a>
          <nav>
            <a
              href="/"
              aria-current={section === "recordings" ? "page" : undefined}
            >
              Recordings
            </a>
            <a
              href="/record"
              class="button"
              aria-current={section === "record" ? "page" : undefined}
            >
              Record
            </a>
          </nav>
        </header>
        <main>{children}</main>
      </body>
    </html>
  );
}
