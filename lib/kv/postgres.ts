// Over 400 lines: one Deno.Kv implementation (reads, atomic commits, watch, expiry sweep) over one connection pool; the key and value codecs are split out already.
/**
 * `Deno.Kv` on PostgreSQL, for `KV_PATH=postgres://...`: the part of the
 * API that tapedeck uses (get, getMany, set, delete, list, atomic with
 * check/set/delete/sum/min/max, watch, close), with Deno KV's key order,
 * limits, cursors and errors, so code that passes here passes on Deno KV.
 *
 * Hand-written because npm has nothing that implements Deno.Kv on
 * PostgreSQL (checked 2026-12): `@deno/kv` is Deno's own client for SQLite
 * files and KV Connect, `@worker-tools/deno-kv-storage` is a StorageArea over
 * other stores, `@keyv/postgres` is a Keyv adapter; none has versionstamps,
 * atomic checks or watch. Deno's own server (denokv) stores only in SQLite.
 *
 * Layout: one table `(k bytea primary key, v bytea, enc, vs bigint,
 * expires_at bigint)`. Keys are encoded as Deno KV encodes them
 * (./key_codec.ts), so `bytea` order is Deno KV's order; values as in
 * ./value_codec.ts. A commit is one call of a PL/pgSQL function: it takes
 * transaction-scoped advisory locks on the md5 of every checked or written
 * key (sorted, so commits never deadlock; absent keys are locked too, which
 * `SELECT ... FOR UPDATE` cannot do), then checks, takes the versionstamp
 * from a sequence, applies the mutations in order and NOTIFYs the first 8
 * hex digits of the md5 of each written key ("*" for more than 700 keys).
 * Watchers LISTEN on one connection per handle and re-read their keys when
 * a hash of theirs (or "*") arrives, after their own commits, and after the
 * LISTEN connection comes back; they emit only when a versionstamp changed.
 *
 * Versionstamps are 16 hex digits of the sequence value and "0000": strictly
 * increasing for the commits of one key and for commits that follow each
 * other; two commits on disjoint keys that run at the same time may commit
 * in the other order than their stamps (nothing in Deno.Kv's API can see it).
 * Expiry uses the server's clock; expired rows are invisible to reads and
 * checks and are swept (with a NOTIFY) by every open handle.
 *
 * A lost connection (server restart) rejects the operations in flight with
 * {@link KvConnectionError}; the next operation reconnects. A commit cut off
 * that way may or may not have been applied, as with any database.
 */

import postgres from "postgres";
import { KvConnectionError } from "./connection_error.ts";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { compareBytes, decodeKey, encodeKey, startsWith } from "./key_codec.ts";
import {
  decodeValue,
  type EncodedValue,
  encodeValue,
  ValueEncoding,
} from "./value_codec.ts";
import { concatBytes } from "../../common/bytes.ts";

/** Options of {@link openPostgresKv}. */
export interface PostgresKvOptions {
  /** Schema of the KV's table, created when missing (default `public`). */
  schema?: string;
  /** Name of the table; the sequence, functions and channel derive from it (default `deno_kv`). */
  table?: string;
  /** Connections for reads and commits (default 4), plus one for LISTEN once watched. */
  maxConnections?: number;
  /**
   * How commits are made serializable: `advisory` (default) locks the keys'
   * hashes; `serializable` runs each commit as a SERIALIZABLE transaction and
   * retries on serialization failures (slower here; kept for comparison).
   */
  locking?: "advisory" | "serializable";
  /** Longest time between two sweeps of expired entries (default 60 s). */
  sweepIntervalMs?: number;
  /**
   * Longest wait for the database's answer to one operation, reconnecting
   * included (default 5 s); past it the operation fails with
   * {@link KvConnectionError}, so a request never hangs on a database that
   * is down or restarting.
   */
  timeoutMs?: number;
}

const MAX_WRITE_KEY = 2048;
const MAX_READ_KEY = MAX_WRITE_KEY + 1;
const MAX_VALUE = 65536;
const MAX_CHECKS = 100;
const MAX_MUTATIONS = 1000;
const MAX_READ_RANGES = 10;
const MAX_READ_ENTRIES = 1000;
const MAX_WATCHED_KEYS = 10;
const MAX_TOTAL_MUTATION = 800 * 1024;
const MAX_TOTAL_KEY = 80 * 1024;
const SCHEMA_VERSION = "tapedeck-kv 1";

const OP = { set: 0, delete: 1, sum: 2, min: 3, max: 4 } as const;

type Sql = ReturnType<typeof postgres>;

interface Row {
  k: Uint8Array;
  v: Uint8Array;
  enc: number;
  vs: string;
}

interface Mutation {
  key: Deno.KvKey;
  op: number;
  value: EncodedValue | null;
  expireIn: number | undefined;
}

interface Watcher {
  bytes: Uint8Array[];
  keys: Deno.KvKey[];
  hex: Set<string>;
  hashes: Set<string>;
  dirty: boolean;
  wake: (() => void) | undefined;
}

const hex = (b: Uint8Array) =>
  Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

const notifyHash = (b: Uint8Array) =>
  createHash("md5").update(b).digest("hex").slice(0, 8);

function identifier(name: string, what: string): string {
  if (!/^[a-z_][a-z0-9_]{0,39}$/.test(name)) {
    throw new TypeError(
      `${what} must be a lowercase SQL identifier of at most 40 characters: ${name}`,
    );
  }
  return name;
}

function validateExpireIn(expireIn: number | undefined): void {
  if (expireIn === undefined) return;
  if (!Number.isInteger(expireIn) || expireIn < 0) {
    throw new TypeError(
      `expireIn must be a non-negative integer: received ${expireIn}`,
    );
  }
}

function checkReadKey(bytes: Uint8Array): void {
  if (bytes.length > MAX_READ_KEY) {
    throw new TypeError(`Key too large for read (max ${MAX_READ_KEY} bytes)`);
  }
}

function checkWriteKey(bytes: Uint8Array): number {
  if (bytes.length > MAX_WRITE_KEY) {
    throw new TypeError(
      `Key too large for write (max ${MAX_WRITE_KEY} bytes)`,
    );
  }
  return bytes.length;
}

const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

function isConnectionError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = String((e as { code?: unknown }).code ?? "");
  if (e.name === "PostgresError") {
    // connection exceptions; admin/crash shutdown, cannot connect now
    return code.startsWith("08") || code.startsWith("57P");
  }
  return CONNECTION_CODES.has(code) || e.name === "ConnectionRefused" ||
    e.name === "ConnectionReset" || e.name === "BrokenPipe";
}

function wrapError(e: unknown): unknown {
  if (e instanceof KvConnectionError) return e;
  if (isConnectionError(e)) {
    return new KvConnectionError(
      `PostgreSQL KV: connection lost or refused (${(e as Error).message})`,
      { cause: e },
    );
  }
  if (e instanceof Error && (e as { code?: string }).code === "KV001") {
    return new TypeError(e.message);
  }
  return e;
}

/** The selector of a list in bytes, as Deno KV's `RawSelector`. */
interface RawSelector {
  prefix?: Uint8Array;
  start?: Uint8Array;
  end?: Uint8Array;
}

function rawSelector(selector: Deno.KvListSelector): RawSelector {
  const s = selector as {
    prefix?: Deno.KvKey;
    start?: Deno.KvKey;
    end?: Deno.KvKey;
  };
  const prefix = s.prefix ? encodeKey(s.prefix) : undefined;
  const start = s.start ? encodeKey(s.start) : undefined;
  const end = s.end ? encodeKey(s.end) : undefined;
  if (prefix) {
    if (
      start && (!startsWith(start, prefix) || start.length === prefix.length)
    ) {
      throw new TypeError("Start key is not in the keyspace defined by prefix");
    }
    if (end && (!startsWith(end, prefix) || end.length === prefix.length)) {
      throw new TypeError("End key is not in the keyspace defined by prefix");
    }
    return { prefix, start, end };
  }
  if (!start || !end) throw new TypeError("Invalid range");
  if (compareBytes(start, end) > 0) {
    throw new TypeError("Start key is greater than end key");
  }
  return { start, end };
}

function commonPrefix(sel: RawSelector): Uint8Array {
  if (sel.prefix) return sel.prefix;
  const a = sel.start!, b = sel.end!;
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return a.subarray(0, n);
}

function rangeStart(sel: RawSelector): Uint8Array {
  return sel.start ?? concatBytes([sel.prefix!, [0]]);
}

function rangeEnd(sel: RawSelector): Uint8Array {
  return sel.end ?? concatBytes([sel.prefix!, [0xff]]);
}

const BASE64URL_PADDED =
  /^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?$/;

function encodeCursor(sel: RawSelector, key: Uint8Array): string {
  const tail = key.subarray(commonPrefix(sel).length);
  return Buffer.from(tail.buffer, tail.byteOffset, tail.byteLength)
    .toString("base64").replaceAll("+", "-").replaceAll("/", "_");
}

function decodeRange(
  sel: RawSelector,
  reverse: boolean,
  cursor: string | undefined,
): [Uint8Array, Uint8Array] {
  if (!cursor) return [rangeStart(sel), rangeEnd(sel)];
  if (!BASE64URL_PADDED.test(cursor)) throw new TypeError("invalid cursor");
  const tail = new Uint8Array(Buffer.from(cursor, "base64url"));
  const common = commonPrefix(sel);
  const [first, last] = reverse
    ? [rangeStart(sel), concatBytes([common, tail])]
    : [concatBytes([common, tail, [0]]), rangeEnd(sel)];
  if (sel.start && compareBytes(first, sel.start) < 0) {
    throw new TypeError("cursor out of bounds");
  }
  if (sel.end && compareBytes(last, sel.end) > 0) {
    throw new TypeError("cursor out of bounds");
  }
  return [first, last];
}

type Pull = (
  selector: Deno.KvListSelector,
  cursor: string | undefined,
  reverse: boolean,
) => Promise<[Deno.KvEntry<unknown>, Uint8Array][]>;

/** Deno.KvListIterator, step for step as Deno's own (ext/kv/01_db.ts). */
class PostgresListIterator<T>
  implements AsyncIterableIterator<Deno.KvEntry<T>> {
  #selector: Deno.KvListSelector;
  #entries: [Deno.KvEntry<unknown>, Uint8Array][] | null = null;
  #cursorGen: (() => string) | null;
  #done = false;
  #lastBatch = false;
  #pull: Pull;
  #limit: number | undefined;
  #count = 0;
  #reverse: boolean;
  #batchSize: number;

  constructor(o: {
    selector: Deno.KvListSelector;
    limit: number | undefined;
    cursor: string | undefined;
    reverse: boolean;
    batchSize: number;
    pull: Pull;
  }) {
    const s = o.selector as {
      prefix?: Deno.KvKey;
      start?: Deno.KvKey;
      end?: Deno.KvKey;
    };
    const has = (k: string) =>
      Object.hasOwn(s, k) && (s as Record<string, unknown>)[k] !== undefined;
    const prefix = has("prefix") ? Object.freeze([...s.prefix!]) : undefined;
    const start = has("start") ? Object.freeze([...s.start!]) : undefined;
    const end = has("end") ? Object.freeze([...s.end!]) : undefined;
    if (prefix) {
      if (start && end) {
        throw new TypeError(
          "Selector can not specify both 'start' and 'end' key when specifying 'prefix'",
        );
      }
      this.#selector = start
        ? { prefix, start }
        : end
        ? { prefix, end }
        : { prefix };
    } else if (start && end) {
      this.#selector = { start, end };
    } else {
      throw new TypeError(
        "Selector must specify either 'prefix' or both 'start' and 'end' key",
      );
    }
    Object.freeze(this.#selector);
    this.#pull = o.pull;
    this.#limit = o.limit;
    this.#reverse = o.reverse;
    this.#batchSize = o.batchSize;
    const cursor = o.cursor;
    this.#cursorGen = cursor ? () => cursor : null;
  }

  /** Where the next page starts: pass it back as the `cursor` option. */
  get cursor(): string {
    if (this.#cursorGen === null) {
      throw new Error("Cannot get cursor before first iteration");
    }
    return this.#cursorGen();
  }

  /** The next entry. */
  async next(): Promise<IteratorResult<Deno.KvEntry<T>, undefined>> {
    if (
      this.#done || (this.#limit !== undefined && this.#count >= this.#limit)
    ) {
      return { done: true, value: undefined };
    }
    if (!this.#entries?.length && !this.#lastBatch) {
      const batch = await this.#pull(
        this.#selector,
        this.#cursorGen ? this.#cursorGen() : undefined,
        this.#reverse,
      );
      batch.reverse();
      this.#entries = batch;
      if (batch.length < this.#batchSize) this.#lastBatch = true;
    }
    const item = this.#entries?.pop();
    if (!item) {
      this.#done = true;
      this.#cursorGen = () => "";
      return { done: true, value: undefined };
    }
    const selector = this.#selector;
    this.#cursorGen = () => encodeCursor(rawSelector(selector), item[1]);
    this.#count++;
    return { done: false, value: item[0] as Deno.KvEntry<T> };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Deno.KvEntry<T>> {
    return this;
  }
}

const COMMIT_VERSIONSTAMP = Symbol("KvCommitVersionstamp");

/** Deno.AtomicOperation: collects checks and mutations, sent by `commit()`. */
class PostgresAtomicOperation implements Deno.AtomicOperation {
  #kv: PostgresKv;
  #checks: Deno.AtomicCheck[] = [];
  #mutations: Mutation[] = [];

  constructor(kv: PostgresKv) {
    this.#kv = kv;
  }

  check(...checks: Deno.AtomicCheck[]): this {
    for (const c of checks) {
      this.#checks.push({ key: c.key, versionstamp: c.versionstamp });
    }
    return this;
  }

  mutate(...mutations: Deno.KvMutation[]): this {
    for (const m of mutations) {
      switch (m.type) {
        case "delete":
          if ((m as { value?: unknown }).value) {
            throw new TypeError("Invalid mutation 'delete' with value");
          }
          this.#mutations.push({
            key: m.key,
            op: OP.delete,
            value: null,
            expireIn: undefined,
          });
          break;
        case "set":
        case "sum":
        case "min":
        case "max": {
          const expireIn = m.type === "set" && typeof m.expireIn === "number"
            ? m.expireIn
            : undefined;
          if (m.type === "set") validateExpireIn(expireIn);
          if (!Object.hasOwn(m, "value")) {
            throw new TypeError(`Invalid mutation '${m.type}' without value`);
          }
          this.#mutations.push({
            key: m.key,
            op: OP[m.type],
            value: encodeValue(m.value),
            expireIn,
          });
          break;
        }
        default:
          throw new TypeError("Invalid mutation type");
      }
    }
    return this;
  }

  sum(key: Deno.KvKey, n: bigint): this {
    return this.#u64(key, OP.sum, n);
  }

  min(key: Deno.KvKey, n: bigint): this {
    return this.#u64(key, OP.min, n);
  }

  max(key: Deno.KvKey, n: bigint): this {
    return this.#u64(key, OP.max, n);
  }

  #u64(key: Deno.KvKey, op: number, n: bigint): this {
    const value = encodeValue(new Deno.KvU64(n));
    this.#mutations.push({ key, op, value, expireIn: undefined });
    return this;
  }

  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }): this {
    validateExpireIn(options?.expireIn);
    this.#mutations.push({
      key,
      op: OP.set,
      value: encodeValue(value),
      expireIn: options?.expireIn,
    });
    return this;
  }

  delete(key: Deno.KvKey): this {
    this.#mutations.push({
      key,
      op: OP.delete,
      value: null,
      expireIn: undefined,
    });
    return this;
  }

  enqueue(): this {
    throw queuesUnsupported();
  }

  async commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    const versionstamp = await this.#kv.commitRaw(
      this.#checks,
      this.#mutations,
    );
    return versionstamp === null ? { ok: false } : { ok: true, versionstamp };
  }
}

function queuesUnsupported(): Error {
  return new Error(
    "Deno KV queues (enqueue/listenQueue) are not supported by the PostgreSQL KV backend",
  );
}

/**
 * Cancels a postgres.js query as its `cancel()` does, keeping the promise
 * of the cancellation handled: `cancel()` drops it, and it rejects when the
 * database is unreachable (an unhandled rejection would end the process).
 * A version without the `canceller` property is left alone.
 */
function cancelQuietly(query: unknown): void {
  const q = query as { canceller?: ((q: unknown) => unknown) | null };
  const cancel = q.canceller;
  if (typeof cancel !== "function") return;
  q.canceller = null;
  try {
    Promise.resolve(cancel(query)).catch(() => {});
  } catch {
    // nothing to cancel
  }
}

/**
 * A PostgreSQL array literal of hex strings, numbers and nulls (none needs
 * quoting). Arrays go as text so that connections need not fetch the array
 * types first (`fetch_types: false`): postgres.js runs that fetch as a
 * promise nobody handles, and a connection reset during it (a database
 * restart) would end the process.
 */
function arrayLiteral(values: (string | number | bigint | null)[]): string {
  return `{${values.map((v) => (v === null ? "NULL" : String(v))).join(",")}}`;
}

/**
 * Seconds before connection attempt `retries` after failed ones: short, so
 * that operations waiting for the database go on as soon as it is back
 * (postgres.js's own backoff grows to 20 s).
 */
function reconnectDelayS(retries: number): number {
  return Math.min(0.05 * 2 ** retries, 0.5) * (0.5 + Math.random() / 2);
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(id);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const id = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** SQL text of one handle (schema-qualified names baked in). */
function statements(schema: string, table: string) {
  const t = `"${schema}"."${table}"`;
  const seq = `"${schema}"."${table}_vs"`;
  const commitFn = `"${schema}"."${table}_commit"`;
  const sweepFn = `"${schema}"."${table}_sweep"`;
  const live = "(t.expires_at is null or t.expires_at > " +
    "(extract(epoch from statement_timestamp()) * 1000)::bigint)";
  const stamp = "lpad(to_hex(t.vs), 16, '0') || '0000'";
  const lockHash = (k: string) =>
    `('x' || substr(md5(${k}), 1, 16))::bit(64)::bigint`;
  const ddl = [
    `create table if not exists ${t} (
      k bytea primary key,
      v bytea not null,
      enc smallint not null,
      vs bigint not null,
      expires_at bigint
    )`,
    `create index if not exists "${table}_expires" on ${t} (expires_at) where expires_at is not null`,
    `create sequence if not exists ${seq}`,
    `create or replace function ${commitFn}(
      lock boolean, ck text[], cv bigint[], mk text[], mo smallint[],
      mv text[], me smallint[], mx bigint[], channel text
    ) returns text language plpgsql as $fn$
    declare
      now_ms bigint;
      stamp bigint;
      h bigint;
      i int;
      key bytea;
      cur record;
      n numeric;
      operand numeric;
      payload text;
    begin
      if lock then
        for h in select distinct ${lockHash("decode(x, 'hex')")}
            from unnest(ck || mk) as x order by 1 loop
          perform pg_advisory_xact_lock(h);
        end loop;
      end if;
      now_ms := (extract(epoch from clock_timestamp()) * 1000)::bigint;
      if exists (
        select 1 from unnest(ck, cv) as c(k, vs)
        left join ${t} as t on t.k = decode(c.k, 'hex')
          and (t.expires_at is null or t.expires_at > now_ms)
        where t.vs is distinct from c.vs
      ) then
        return null;
      end if;
      stamp := nextval('${seq}');
      for i in 1 .. coalesce(array_length(mk, 1), 0) loop
        key := decode(mk[i], 'hex');
        if mo[i] = 0 then
          insert into ${t} as t (k, v, enc, vs, expires_at)
          values (key, decode(mv[i], 'hex'), me[i], stamp, now_ms + mx[i])
          on conflict (k) do update set v = excluded.v, enc = excluded.enc,
            vs = excluded.vs, expires_at = excluded.expires_at;
        elsif mo[i] = 1 then
          delete from ${t} where k = key;
        else
          operand := ('x' || mv[i])::bit(64)::bigint;
          if operand < 0 then operand := operand + 18446744073709551616; end if;
          select t.v, t.enc into cur from ${t} as t where t.k = key
            and (t.expires_at is null or t.expires_at > now_ms);
          if not found then
            n := operand;
          elsif cur.enc <> 3 then
            raise exception 'Failed to perform ''%'' mutation on a non-U64 value in the database',
              (array['set', 'delete', 'sum', 'min', 'max'])[mo[i] + 1]
              using errcode = 'KV001';
          else
            n := ('x' || encode(cur.v, 'hex'))::bit(64)::bigint;
            if n < 0 then n := n + 18446744073709551616; end if;
            if mo[i] = 2 then
              n := mod(n + operand, 18446744073709551616);
            elsif mo[i] = 3 then
              n := least(n, operand);
            else
              n := greatest(n, operand);
            end if;
          end if;
          if n >= 9223372036854775808 then n := n - 18446744073709551616; end if;
          insert into ${t} as t (k, v, enc, vs, expires_at)
          values (key, int8send(n::bigint), 3, stamp, null)
          on conflict (k) do update set v = excluded.v, enc = excluded.enc,
            vs = excluded.vs, expires_at = null;
        end if;
      end loop;
      if coalesce(array_length(mk, 1), 0) > 0 then
        select case when count(*) > 700 then '*' else string_agg(x, ',') end
          into payload
          from (select distinct substr(md5(decode(y, 'hex')), 1, 8) as x
            from unnest(mk) as y) as s;
        perform pg_notify(channel, payload);
      end if;
      return lpad(to_hex(stamp), 16, '0') || '0000';
    end
    $fn$`,
    `create or replace function ${sweepFn}(lock boolean, max_rows int, channel text)
    returns bigint language plpgsql as $fn$
    declare
      now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
      ks bytea[];
      h bigint;
      payload text;
      next_ms bigint;
    begin
      select array_agg(k) into ks from (
        select k from ${t} where expires_at <= now_ms
        order by expires_at limit max_rows) as s;
      if ks is not null then
        if lock then
          for h in select distinct ${
      lockHash("x")
    } from unnest(ks) as x order by 1 loop
            perform pg_advisory_xact_lock(h);
          end loop;
        end if;
        with d as (
          delete from ${t} where k = any(ks) and expires_at <= now_ms returning k
        )
        select case when count(*) > 700 then '*'
          else string_agg(distinct substr(md5(k), 1, 8), ',') end
          into payload from d;
        if payload is not null then perform pg_notify(channel, payload); end if;
      end if;
      select min(expires_at) - now_ms into next_ms from ${t} where expires_at is not null;
      return next_ms;
    end
    $fn$`,
    `comment on function ${commitFn}(boolean, text[], bigint[], text[], smallint[], text[], smallint[], bigint[], text) is '${SCHEMA_VERSION}'`,
  ];
  return {
    ddl,
    installed: `select obj_description(p.oid, 'pg_proc') as version
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = $1 and p.proname = $2`,
    get:
      `select t.k, t.v, t.enc, ${stamp} as vs from ${t} as t where t.k = $1 and ${live}`,
    getMany: `select t.k, t.v, t.enc, ${stamp} as vs from ${t} as t
      where t.k = any(array(select decode(x, 'hex') from unnest($1::text[]) as x)) and ${live}`,
    listAsc: `select t.k, t.v, t.enc, ${stamp} as vs from ${t} as t
      where t.k >= $1 and t.k < $2 and ${live} order by t.k limit $3`,
    listDesc: `select t.k, t.v, t.enc, ${stamp} as vs from ${t} as t
      where t.k >= $1 and t.k < $2 and ${live} order by t.k desc limit $3`,
    commit:
      `select ${commitFn}($1, $2::text[], $3::bigint[], $4::text[], $5::smallint[],
      $6::text[], $7::smallint[], $8::bigint[], $9) as vs`,
    sweep: `select ${sweepFn}($1, $2, $3) as next_ms`,
  };
}

/** A `Deno.Kv` whose data lives in PostgreSQL. Made by {@link openPostgresKv}. */
export class PostgresKv implements Deno.Kv {
  #sql: Sql;
  #url: string;
  #schema: string;
  #table: string;
  #q: ReturnType<typeof statements>;
  #channel: string;
  #lock: boolean;
  #sweepIntervalMs: number;
  #timeoutMs: number;
  #closed = false;
  #abort = new AbortController();
  #watchers = new Set<Watcher>();
  #listenSql: Sql | undefined;
  #listening = false;
  #listenLoop: Promise<void> | undefined;
  #listenWaiters: (() => void)[] = [];
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;
  #sweepAt = Infinity;
  #sweeping: Promise<void> | undefined;

  /** Use {@link openPostgresKv}. */
  constructor(url: string, options: PostgresKvOptions = {}) {
    const schema = identifier(options.schema ?? "public", "schema");
    const table = identifier(options.table ?? "deno_kv", "table");
    this.#url = url;
    this.#schema = schema;
    this.#table = table;
    this.#q = statements(schema, table);
    this.#channel = `${schema}__${table}`;
    this.#lock = (options.locking ?? "advisory") === "advisory";
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#sql = postgres(url, {
      max: options.maxConnections ?? 4,
      connect_timeout: 10,
      backoff: reconnectDelayS,
      // No recycling timer: `end()` resolves before a socket's close event
      // cancels it, so close() would leave it running; a broken connection
      // is made again anyway.
      max_lifetime: null,
      fetch_types: false, // see arrayLiteral
      onnotice: () => {},
      connection: { application_name: "tapedeck-kv" },
    });
  }

  /** Creates the table, sequence and functions when missing. */
  async setup(): Promise<void> {
    try {
      const rows = await this.#sql.unsafe(this.#q.installed, [
        this.#schema,
        `${this.#table}_commit`,
      ]);
      if (rows[0]?.version !== SCHEMA_VERSION) await this.#install();
    } catch (e) {
      throw wrapError(e);
    }
    this.#scheduleSweep(0);
  }

  async #install(): Promise<void> {
    await this.#sql.begin(async (tx) => {
      await tx.unsafe(
        "select pg_advisory_xact_lock(hashtextextended($1, 0))",
        [
          `deno_kv_setup:${this.#schema}.${this.#table}`,
        ],
      );
      const [ns] = await tx.unsafe(
        "select 1 as x from pg_namespace where nspname = $1",
        [this.#schema],
      );
      if (!ns) {
        await tx.unsafe(`create schema if not exists "${this.#schema}"`);
      }
      for (const statement of this.#q.ddl) await tx.unsafe(statement);
    });
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("The PostgreSQL KV is closed");
  }

  async #query(text: string, params: unknown[]): Promise<Row[]> {
    this.#checkOpen();
    // deno-lint-ignore no-explicit-any
    const query = this.#sql.unsafe(text, params as any[], { prepare: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // Not sent yet: it never will be. Sent: its outcome is unknown.
        cancelQuietly(query);
        reject(
          new KvConnectionError(
            `PostgreSQL KV: no answer within ${this.#timeoutMs} ms (the database is down or restarting)`,
          ),
        );
      }, this.#timeoutMs);
    });
    try {
      return await Promise.race([query, late]) as unknown as Row[];
    } catch (e) {
      throw wrapError(e);
    } finally {
      clearTimeout(timer);
    }
  }

  #entry(row: Row): Deno.KvEntry<unknown> {
    return {
      key: decodeKey(row.k),
      value: decodeValue(row.enc, row.v),
      versionstamp: row.vs,
    };
  }

  /** Reads one key. */
  async get<T = unknown>(
    key: Deno.KvKey,
    _options?: { consistency?: Deno.KvConsistencyLevel },
  ): Promise<Deno.KvEntryMaybe<T>> {
    const bytes = encodeKey(key);
    checkReadKey(concatBytes([bytes, [0]]));
    const [row] = await this.#query(this.#q.get, [bytes]);
    if (!row) return { key, value: null, versionstamp: null };
    return this.#entry(row) as Deno.KvEntry<T>;
  }

  async #readMany(keys: readonly Deno.KvKey[], bytes: Uint8Array[]) {
    const rows = bytes.length
      ? await this.#query(this.#q.getMany, [arrayLiteral(bytes.map(hex))])
      : [];
    const found = new Map<string, Row>();
    for (const row of rows) found.set(hex(row.k), row);
    return bytes.map((b, i) => {
      const row = found.get(hex(b));
      return row
        ? this.#entry(row)
        : { key: keys[i], value: null, versionstamp: null };
    });
  }

  /** Reads up to 10 keys at once. */
  async getMany<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
    _options?: { consistency?: Deno.KvConsistencyLevel },
  ): Promise<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
    const list = keys as readonly Deno.KvKey[];
    const bytes = list.map((k) => encodeKey(k));
    if (bytes.length > MAX_READ_RANGES) {
      throw new TypeError(`Too many ranges (max ${MAX_READ_RANGES})`);
    }
    for (const b of bytes) checkReadKey(concatBytes([b, [0]]));
    return await this.#readMany(list, bytes) as {
      [K in keyof T]: Deno.KvEntryMaybe<T[K]>;
    };
  }

  /** Writes one key. */
  async set(
    key: Deno.KvKey,
    value: unknown,
    options?: { expireIn?: number },
  ): Promise<Deno.KvCommitResult> {
    validateExpireIn(options?.expireIn);
    const versionstamp = await this.commitRaw([], [{
      key,
      op: OP.set,
      value: encodeValue(value),
      expireIn: options?.expireIn,
    }]);
    if (versionstamp === null) throw new TypeError("Failed to set value");
    return { ok: true, versionstamp };
  }

  /** Deletes one key. */
  async delete(key: Deno.KvKey): Promise<void> {
    await this.commitRaw([], [{
      key,
      op: OP.delete,
      value: null,
      expireIn: undefined,
    }]);
  }

  /** Lists a range of keys in order (Deno.KvListIterator semantics, cursors included). */
  list<T = unknown>(
    selector: Deno.KvListSelector,
    options: Deno.KvListOptions = {},
  ): Deno.KvListIterator<T> {
    if (
      options.limit !== undefined &&
      (!Number.isInteger(options.limit) || options.limit <= 0)
    ) {
      throw new Error(
        `Limit must be a positive integer: received ${options.limit}`,
      );
    }
    let batchSize = options.batchSize ?? options.limit ?? 100;
    if (!Number.isInteger(batchSize) || batchSize <= 0) {
      throw new Error(
        `batchSize must be a positive integer: received ${batchSize}`,
      );
    }
    if (options.batchSize === undefined && batchSize > 500) batchSize = 500;
    const size = batchSize;
    return new PostgresListIterator<T>({
      selector,
      limit: options.limit,
      cursor: options.cursor,
      reverse: options.reverse ?? false,
      batchSize: size,
      pull: async (sel, cursor, reverse) => {
        const raw = rawSelector(sel);
        const [first, last] = decodeRange(raw, reverse, cursor);
        checkReadKey(first);
        checkReadKey(last);
        if (size > MAX_READ_ENTRIES) {
          throw new TypeError(`Too many entries (max ${MAX_READ_ENTRIES})`);
        }
        const rows = await this.#query(
          reverse ? this.#q.listDesc : this.#q.listAsc,
          [first, last, size],
        );
        return rows.map((r) => [this.#entry(r), new Uint8Array(r.k)]);
      },
    });
  }

  /** Starts an atomic operation. */
  atomic(): Deno.AtomicOperation {
    return new PostgresAtomicOperation(this);
  }

  /** Validates and sends a commit; the versionstamp, or null when a check failed. */
  async commitRaw(
    checks: Deno.AtomicCheck[],
    mutations: Mutation[],
  ): Promise<string | null> {
    if (checks.length > MAX_CHECKS) {
      throw new TypeError(`Too many checks (max ${MAX_CHECKS})`);
    }
    if (mutations.length > MAX_MUTATIONS) {
      throw new TypeError(`Too many mutations (max ${MAX_MUTATIONS})`);
    }
    const checkKeys = checks.map((c) => encodeKey(c.key));
    const checkStamps = checks.map((c) => {
      if (c.versionstamp === null) return null;
      if (
        typeof c.versionstamp !== "string" ||
        !/^[0-9a-f]{20}$/.test(c.versionstamp)
      ) {
        throw new TypeError("Invalid check");
      }
      return c.versionstamp.endsWith("0000")
        ? BigInt("0x" + c.versionstamp.slice(0, 16)).toString()
        : "-1";
    });
    for (const m of mutations) {
      const last = m.key[m.key.length - 1];
      if (last === COMMIT_VERSIONSTAMP) {
        throw new TypeError(
          "Versionstamped keys (commitVersionstamp) are not supported by the PostgreSQL KV backend",
        );
      }
    }
    const mutKeys = mutations.map((m) => encodeKey(m.key));
    let total = 0;
    let totalKeys = 0;
    for (const k of [...checkKeys, ...mutKeys]) {
      if (k.length === 0) throw new TypeError("key cannot be empty");
      total += checkWriteKey(k);
    }
    mutations.forEach((m, i) => {
      if (!m.value) return;
      if (m.op !== OP.set && m.value.encoding !== ValueEncoding.U64) {
        throw new TypeError(
          `Failed to perform '${
            ["set", "delete", "sum", "min", "max"][m.op]
          }' mutation on a non-U64 operand`,
        );
      }
      if (m.value.bytes.length > MAX_VALUE) {
        throw new TypeError(`Value too large (max ${MAX_VALUE} bytes)`);
      }
      total += m.value.bytes.length + mutKeys[i].length;
      totalKeys += mutKeys[i].length;
    });
    if (total > MAX_TOTAL_MUTATION) {
      throw new TypeError(
        `Total mutation size too large (max ${MAX_TOTAL_MUTATION} bytes)`,
      );
    }
    if (totalKeys > MAX_TOTAL_KEY) {
      throw new TypeError(
        `Total key size too large (max ${MAX_TOTAL_KEY} bytes)`,
      );
    }
    const mk = mutKeys.map(hex);
    const params = [
      this.#lock,
      arrayLiteral(checkKeys.map(hex)),
      arrayLiteral(checkStamps),
      arrayLiteral(mk),
      arrayLiteral(mutations.map((m) => m.op)),
      arrayLiteral(mutations.map((m) => (m.value ? hex(m.value.bytes) : null))),
      arrayLiteral(mutations.map((m) => m.value?.encoding ?? 0)),
      arrayLiteral(mutations.map((m) => m.expireIn ?? null)),
      this.#channel,
    ];
    const versionstamp = await this.#send(params);
    if (versionstamp !== null && mk.length) {
      this.#touched(new Set(mk));
      const soonest = Math.min(...mutations.map((m) => m.expireIn ?? Infinity));
      if (soonest !== Infinity) this.#scheduleSweep(soonest + 5);
    }
    return versionstamp;
  }

  async #send(params: unknown[]): Promise<string | null> {
    if (this.#lock) {
      const [row] = await this.#query(this.#q.commit, params);
      return row.vs ?? null;
    }
    for (let attempt = 0;; attempt++) {
      this.#checkOpen();
      try {
        const rows = await this.#sql.begin(
          "isolation level serializable",
          // deno-lint-ignore no-explicit-any
          (tx) => tx.unsafe(this.#q.commit, params as any[], { prepare: true }),
        );
        return (rows[0] as unknown as Row).vs ?? null;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if ((code === "40001" || code === "40P01") && attempt < 100) {
          await abortableSleep(
            Math.random() * Math.min(50, 1 + attempt * 2),
            this.#abort.signal,
          );
          continue;
        }
        throw wrapError(e);
      }
    }
  }

  /**
   * A stream of the entries of up to 10 keys: their current entries first,
   * then again each time any of their versionstamps changes (intermediate
   * values may be skipped). Sees commits of every process on the database.
   */
  watch<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
    options: { raw?: boolean } = {},
  ): ReadableStream<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
    this.#checkOpen();
    const list = [...(keys as readonly Deno.KvKey[])];
    const bytes = list.map((k) => encodeKey(k));
    if (bytes.length > MAX_WATCHED_KEYS) {
      throw new TypeError(`Too many keys (max ${MAX_WATCHED_KEYS})`);
    }
    for (const b of bytes) checkReadKey(b);
    const w: Watcher = {
      bytes,
      keys: list,
      hex: new Set(bytes.map(hex)),
      hashes: new Set(bytes.map(notifyHash)),
      dirty: true,
      wake: undefined,
    };
    this.#watchers.add(w);
    this.#ensureListening();
    const raw = options.raw ?? false;
    let last: (string | null)[] | undefined;
    const signal = this.#abort.signal;
    let backoff = 50;
    return new ReadableStream({
      pull: async (controller) => {
        while (true) {
          if (this.#closed || !this.#watchers.has(w)) {
            this.#watchers.delete(w);
            if (this.#closed) controller.close();
            return;
          }
          if (!this.#listening) {
            await new Promise<void>((r) => this.#listenWaiters.push(r));
            continue;
          }
          if (!w.dirty) {
            await new Promise<void>((r) => (w.wake = r));
            w.wake = undefined;
            continue;
          }
          w.dirty = false;
          let entries;
          try {
            entries = await this.#readMany(w.keys, w.bytes);
            backoff = 50;
          } catch {
            w.dirty = true;
            await abortableSleep(backoff, signal);
            backoff = Math.min(backoff * 2, 1000);
            continue;
          }
          const stamps = entries.map((e) => e.versionstamp);
          if (!raw && last && stamps.every((s, i) => s === last![i])) continue;
          last = stamps;
          controller.enqueue(
            entries.map((e) =>
              e.versionstamp === null ? { ...e, key: [...e.key] } : e
            ) as { [K in keyof T]: Deno.KvEntryMaybe<T[K]> },
          );
          return;
        }
      },
      cancel: () => {
        this.#watchers.delete(w);
        w.wake?.();
      },
    });
  }

  #wakeAll(): void {
    for (const w of this.#watchers) {
      w.dirty = true;
      w.wake?.();
    }
  }

  #touched(keysHex: Set<string>): void {
    for (const w of this.#watchers) {
      for (const h of w.hex) {
        if (keysHex.has(h)) {
          w.dirty = true;
          w.wake?.();
          break;
        }
      }
    }
  }

  #notified(payload: string): void {
    if (payload === "*") return this.#wakeAll();
    const hashes = new Set(payload.split(","));
    for (const w of this.#watchers) {
      for (const h of w.hashes) {
        if (hashes.has(h)) {
          w.dirty = true;
          w.wake?.();
          break;
        }
      }
    }
  }

  #ensureListening(): void {
    if (this.#listenLoop || this.#listening || this.#closed) return;
    this.#listenSql ??= postgres(this.#url, {
      max: 1,
      idle_timeout: undefined,
      max_lifetime: null,
      fetch_types: false,
      connect_timeout: 10,
      onnotice: () => {},
      connection: { application_name: "tapedeck-kv-listen" },
      onnotify: (_channel: string, payload: string) => this.#notified(payload),
      onclose: () => {
        this.#listening = false;
        if (!this.#closed) this.#ensureListening();
      },
    } as postgres.Options<Record<string, never>>);
    const sql = this.#listenSql;
    this.#listenLoop = (async () => {
      let delay = 50;
      while (!this.#closed && !this.#listening) {
        try {
          await sql.unsafe(`listen "${this.#channel}"`);
          this.#listening = true;
          for (const r of this.#listenWaiters.splice(0)) r();
          this.#wakeAll();
        } catch {
          await abortableSleep(delay, this.#abort.signal);
          delay = Math.min(delay * 2, 1000);
        }
      }
    })().finally(() => (this.#listenLoop = undefined));
  }

  #scheduleSweep(inMs: number): void {
    if (this.#closed) return;
    const at = Date.now() + Math.max(0, Math.min(inMs, this.#sweepIntervalMs));
    if (this.#sweepTimer !== undefined) {
      if (at >= this.#sweepAt) return;
      clearTimeout(this.#sweepTimer);
    }
    this.#sweepAt = at;
    const timer = setTimeout(() => {
      this.#sweepTimer = undefined;
      this.#sweepAt = Infinity;
      if (this.#sweeping) return this.#scheduleSweep(50);
      this.#sweeping = this.#sweep().finally(
        () => (this.#sweeping = undefined),
      );
    }, Math.max(0, at - Date.now()));
    Deno.unrefTimer(timer);
    this.#sweepTimer = timer;
  }

  async #sweep(): Promise<void> {
    let next: number;
    try {
      const [row] = await this.#query(this.#q.sweep, [
        this.#lock,
        500,
        this.#channel,
      ]) as unknown as {
        next_ms: string | null;
      }[];
      next = row.next_ms === null ? Infinity : Number(row.next_ms) + 5;
    } catch {
      next = 1000;
    }
    this.#scheduleSweep(next);
  }

  enqueue(): Promise<Deno.KvCommitResult> {
    return Promise.reject(queuesUnsupported());
  }

  listenQueue(): Promise<void> {
    return Promise.reject(queuesUnsupported());
  }

  commitVersionstamp(): symbol {
    return COMMIT_VERSIONSTAMP;
  }

  /**
   * Closes the connections and ends the watch streams. `Deno.Kv.close` is
   * synchronous; this returns a promise that settles once every socket and
   * timer is gone (await it in tests that check for leaks).
   */
  close(): Promise<void> {
    if (this.#closed) return this.#closing ?? Promise.resolve();
    this.#closed = true;
    this.#abort.abort();
    if (this.#sweepTimer !== undefined) clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#wakeAll();
    for (const r of this.#listenWaiters.splice(0)) r();
    this.#closing = (async () => {
      await this.#sweeping?.catch(() => {});
      await this.#listenLoop?.catch(() => {});
      await Promise.all([
        this.#sql.end({ timeout: 5 }),
        this.#listenSql?.end({ timeout: 5 }),
      ]);
    })().catch(() => {});
    return this.#closing;
  }

  #closing: Promise<void> | undefined;

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens a `Deno.Kv` stored in PostgreSQL at `url` (`postgres://user@host/db`),
 * creating its table, sequence and functions on first use. Close it with
 * `close()` (which returns a promise here). Several handles, in one process
 * or many, share the data and see each other's commits in `watch`.
 */
export async function openPostgresKv(
  url: string,
  options?: PostgresKvOptions,
): Promise<Deno.Kv> {
  const kv = new PostgresKv(url, options);
  try {
    await kv.setup();
  } catch (e) {
    await kv.close();
    throw e;
  }
  return kv;
}
