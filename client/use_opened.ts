/**
 * The one hook of the islands: the plain object that holds an island's
 * logic is made once per component and kept open while it is mounted.
 */

import { useEffect, useMemo } from "preact/hooks";

/** Something that starts with `open()` and stops with what `open()` returned. */
export interface Openable {
  open(): () => void;
}

/**
 * Makes `create()` once for this component (also on the server, where it
 * is never opened) and opens it after the first render; what `open()`
 * returned runs when the component goes away.
 */
export function useOpened<T extends Openable>(create: () => T): T {
  const model = useMemo(create, []);
  useEffect(() => model.open(), [model]);
  return model;
}
