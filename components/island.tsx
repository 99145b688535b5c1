import { type ComponentType, h } from "preact";

/** Props of {@link Island}. */
export interface IslandProps<P extends object> {
  /** File name of the island in `islands/`, without `.tsx`. */
  name: string;
  component: ComponentType<P>;
  props: P;
}

/** JSON that is safe inside a `<script>` element (no `</script>`, no `<!--`). */
export function serializeProps(props: unknown): string {
  return JSON.stringify(props)
    .replace(/</g, "\\u003c")
    .replace(/>/g, "\\u003e")
    .replace(/&/g, "\\u0026")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

/**
 * Renders an island on the server inside a `[data-island]` element, with its
 * props in a `<script type="application/json">` that the browser bundle reads
 * to hydrate it (no inline code, so a strict CSP holds).
 */
export function Island<P extends object>(
  { name, component, props }: IslandProps<P>,
) {
  const propsId = `island-props-${name}`;
  return (
    <>
      <div class="island" data-island={name} data-props={propsId}>
        {h(component, props)}
      </div>
      <script
        type="application/json"
        id={propsId}
        dangerouslySetInnerHTML={{ __html: serializeProps(props) }}
      />
    </>
  );
}
