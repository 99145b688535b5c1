/**
 * Helpers of tests/openapi_test.ts: the operations of the OpenAPI document
 * with their example requests, the recordings an example is `given`
 * (made through the real API), sending an example as a client would, and
 * checking a JSON answer against the documented schema (Ajv, JSON Schema
 * 2020-12, the dialect of OpenAPI 3.1).
 */

import { Ajv2020 } from "ajv/dist/2020.js";
import {
  EXAMPLE_CHUNK,
  EXAMPLE_ID,
  EXAMPLE_KEY,
  EXAMPLE_TOKEN,
  type ExampleRequest,
  type Given,
  type JsonObject,
} from "../lib/openapi/builders.ts";
import { fromBase64 } from "../lib/core/base64.ts";
import { makeRecording, waitForStatus } from "./helpers.ts";

/** HTTP methods an OpenAPI path item may hold. */
export const METHODS = [
  "get",
  "put",
  "post",
  "delete",
  "options",
  "head",
  "patch",
  "trace",
];

/** One operation of the document. */
export interface DocOperation {
  method: string;
  path: string;
  operation: JsonObject;
  examples: ExampleRequest[];
}

/** Every operation of a document. */
export function operationsOf(doc: JsonObject): DocOperation[] {
  const out: DocOperation[] = [];
  for (const [path, item] of Object.entries(doc.paths as JsonObject)) {
    for (const [method, op] of Object.entries(item as JsonObject)) {
      if (!METHODS.includes(method)) continue;
      const operation = op as JsonObject;
      out.push({
        method,
        path,
        operation,
        examples:
          (operation["x-examples"] ?? []) as unknown as ExampleRequest[],
      });
    }
  }
  return out;
}

/** A recording an example is about. */
interface Fixture {
  id: string;
  token?: string;
}

/** Makes the recordings examples are `given`, on one server. */
export class Fixtures {
  #url: string;
  #secured: boolean;
  #complete?: Promise<Fixture>;
  #dir: string;

  constructor(url: string, secured: boolean, dir: string) {
    this.#url = url;
    this.#secured = secured;
    this.#dir = dir;
  }

  /** The recording for `given` (a fresh one, but one shared `complete`). */
  async make(given: Given | undefined): Promise<Fixture | null> {
    switch (given) {
      case undefined:
        return null;
      case "unknown":
        return { id: crypto.randomUUID() };
      case "recording":
        return await this.#create();
      case "recording_with_data":
        return await this.#withData();
      case "failed": {
        // A WebM header alone cannot be processed: the job fails.
        const rec = await this.#withData();
        await this.#post(`/complete_job/${rec.id}/`, rec);
        await waitForStatus(this.#url, rec.id, ["failed"], 30_000);
        return rec;
      }
      case "complete":
        this.#complete ??= this.#makeComplete();
        return await this.#complete;
      case "tus_upload":
        return await this.#tus({ "Upload-Defer-Length": "1" });
      case "tus_partial": {
        const part = await this.#tus({
          "Upload-Concat": "partial",
          "Upload-Length": "48",
        });
        const res = await fetch(`${this.#url}/files/${part.id}`, {
          method: "PATCH",
          headers: {
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
          },
          body: fromBase64(EXAMPLE_CHUNK),
        });
        await expectOk(res, "PATCH of the partial upload");
        return part;
      }
    }
  }

  async #create(): Promise<Fixture> {
    const res = await fetch(`${this.#url}/create/`, {
      method: "POST",
      headers: this.#secured ? { Authorization: `Bearer ${EXAMPLE_KEY}` } : {},
    });
    await expectOk(res, "create");
    const body = await res.json();
    return { id: body.video_id, token: body.upload_token };
  }

  async #withData(bytes?: Uint8Array<ArrayBuffer>): Promise<Fixture> {
    const rec = await this.#create();
    const res = await fetch(`${this.#url}/add_data/${rec.id}/`, {
      method: "POST",
      headers: {
        "Content-Type": "video/webm",
        "X-Chunk-Index": "0",
        ...(rec.token ? { "X-Upload-Token": rec.token } : {}),
      },
      body: bytes ?? fromBase64(EXAMPLE_CHUNK),
    });
    await expectOk(res, "add_data");
    return rec;
  }

  async #post(path: string, rec: Fixture): Promise<void> {
    const res = await fetch(`${this.#url}${path}`, {
      method: "POST",
      headers: rec.token ? { "X-Upload-Token": rec.token } : {},
    });
    await expectOk(res, path);
  }

  async #makeComplete(): Promise<Fixture> {
    const video = await makeRecording(`${this.#dir}/example.webm`, {
      seconds: 1,
    });
    const rec = await this.#withData(video);
    await this.#post(`/complete_job/${rec.id}/?last_chunk=0`, rec);
    await waitForStatus(this.#url, rec.id, ["complete"], 60_000);
    return rec;
  }

  async #tus(headers: Record<string, string>): Promise<Fixture> {
    const res = await fetch(`${this.#url}/files/`, {
      method: "POST",
      headers: {
        "Tus-Resumable": "1.0.0",
        ...(this.#secured ? { Authorization: `Bearer ${EXAMPLE_KEY}` } : {}),
        ...headers,
      },
    });
    await expectOk(res, "tus creation");
    return {
      id: res.headers.get("X-Video-Id")!,
      token: res.headers.get("X-Upload-Token") ?? undefined,
    };
  }
}

async function expectOk(res: Response, what: string): Promise<void> {
  if (!res.ok) {
    throw new Error(`${what} answered ${res.status}: ${await res.text()}`);
  }
  if (res.body && res.status !== 200) await res.body.cancel();
}

/** Puts the fixture's id and token where the example has the placeholders. */
function fill(text: string, fixture: Fixture | null): string {
  if (!fixture) return text;
  return text.replaceAll(EXAMPLE_ID, fixture.id)
    .replaceAll(EXAMPLE_TOKEN, fixture.token ?? "");
}

function fillAll(
  values: Record<string, string> | undefined,
  fixture: Fixture | null,
): Record<string, string> {
  return Object.fromEntries(
    Object.entries(values ?? {}).map(([k, v]) => [k, fill(v, fixture)]),
  );
}

/** Sends an example request of an operation as a client would. */
export async function sendExample(
  baseUrl: string,
  op: DocOperation,
  example: ExampleRequest,
  fixture: Fixture | null,
): Promise<Response> {
  const params: Record<string, string> = {
    id: fixture?.id ?? EXAMPLE_ID,
    ...fillAll(example.path, fixture),
  };
  const path = op.path.replace(
    /\{(\w+)\}/g,
    (_, name) => encodeURIComponent(params[name] ?? `{${name}}`),
  );
  const url = new URL(path, baseUrl);
  for (const [k, v] of Object.entries(fillAll(example.query, fixture))) {
    url.searchParams.set(k, v);
  }
  const headers = new Headers(fillAll(example.headers, fixture));
  let body: BodyInit | undefined;
  const spec = example.body;
  if (spec?.json !== undefined) {
    body = fill(JSON.stringify(spec.json), fixture);
    headers.set("Content-Type", spec.contentType);
  } else if (spec?.base64 !== undefined) {
    body = fromBase64(spec.base64);
    headers.set("Content-Type", spec.contentType);
  } else if (spec?.form) {
    const fields = Object.entries(spec.form);
    if (spec.urlencoded) {
      body = new URLSearchParams(
        fields.map(([k, v]) => [k, typeof v === "string" ? v : v.base64]),
      );
    } else {
      const form = new FormData();
      for (const [k, v] of fields) {
        if (typeof v === "string") form.append(k, fill(v, fixture));
        else form.append(k, new Blob([fromBase64(v.base64)], { type: v.type }));
      }
      body = form;
    }
  }
  return await fetch(url, {
    method: example.method ?? op.method.toUpperCase(),
    headers,
    body,
  });
}

/** Validates JSON against the document's schemas. */
export function schemaChecker(
  doc: JsonObject,
): (schema: JsonObject, value: unknown) => string | null {
  const ajv = new Ajv2020({ strict: false, validateFormats: false });
  const base = "tapedeck:openapi";
  ajv.addSchema({ $id: base, components: doc.components }, base);
  return (schema, value) => {
    const validate = ajv.compile(
      typeof schema.$ref === "string"
        ? { $ref: `${base}${schema.$ref}` }
        : schema,
    );
    return validate(value) ? null : ajv.errorsText(validate.errors);
  };
}
