/**
 * The fault table every cloud backend runs (s3 on Swift, azure on Azurite,
 * gcs on the emulator), through the fault proxy of scripts/servers/faults.ts:
 * each case uploads and downloads a multi-part object through the proxy, with
 * the fault on the first matching requests at a random byte, and checks that
 * the run either completes with the exact bytes or fails clearly within a
 * bound derived from the retry settings; never hangs, never leaves a partial
 * object, never prints a credential.
 *
 * Runs per case: `CICACHE_FAULT_RUNS` (default 1 in `deno task test`; the
 * soak raises it).
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { readAll, seededBytes, streamOf } from "./backend_conformance.ts";
import type { Backend } from "../lib/storage/backend.ts";
import {
  type Fault,
  type ProxiedRequest,
  startFaultProxy,
  startTcpFaultProxy,
  TCP_FAULT_KINDS,
} from "../scripts/servers/faults.ts";
import { Logger } from "../lib/log.ts";

/**
 * Retry settings the table's backends use; the time bound is derived from them. The idle timeout leaves room
 * for a loaded CI machine (Swift fsyncs every object: a PUT can answer seconds after its last byte).
 */
export const FAULT_POLICY = { idleMs: 4000, retries: 3, baseMs: 100 };
/**
 * Retries of the runs that must give up (every request stalls, an endpoint that never answers): the retry
 * path is proven by the cases that recover, the giving up by these, at half the time of the full policy.
 */
export const GIVE_UP_RETRIES = 1;
/**
 * Idle timeout of the runs that must give up: no server speed is awaited there (every request stalls), so
 * the room {@link FAULT_POLICY} leaves for a slow Swift is not needed.
 */
export const GIVE_UP_IDLE_MS = 2000;
/** Longest a failing run with `retries` may take: every attempt idles out and waits its longest backoff, plus slack. */
export function faultBound(retries: number, idleMs = FAULT_POLICY.idleMs): number {
  return (retries + 1) * (idleMs + 30_000 / 30) + 60_000;
}
/** {@link faultBound} of the full policy: no run of the table may take longer. */
export const FAULT_BOUND_MS = faultBound(FAULT_POLICY.retries);

/** How one backend takes part. */
export interface FaultTarget {
  kind: string;
  /**
   * A backend talking to `endpoint` (the proxy, or an unresolvable host) with {@link FAULT_POLICY}, or with
   * `retries` and `idleMs` when given (the runs that must give up).
   */
  through(endpoint: string, log: Logger, retries?: number, idleMs?: number): Backend;
  /** A backend talking straight to the server, to check what is stored. */
  owner: Backend;
  /** The port of the real server. */
  port: number;
  /** Requests that carry upload bytes (a part, block or chunk). */
  isUpload(r: ProxiedRequest): boolean;
  /** Requests that read object bytes (a range). */
  isDownload(r: ProxiedRequest): boolean;
  /** Size of the test object (several parts and ranges). */
  size: number;
  /** Secrets that must never appear in a log line or error. */
  secrets: string[];
  /**
   * Not HTTP (sftp): the raw-TCP proxy (startTcpFaultProxy) applies the fault per connection, and only the
   * cases whose fault a raw stream can carry run (TCP_FAULT_KINDS).
   */
  raw?: boolean;
}

/** One row of the table. */
export interface FaultCase {
  name: string;
  /**
   * Which requests get the fault: uploads or downloads (the proxy closes every connection after one
   * request), or requests on a pooled keep-alive connection that carried one before (`reused`: the proxy
   * keeps connections open, as the client asks).
   */
  on: "upload" | "download" | "reused";
  /** How many matching requests get it (then they pass); Infinity = all. */
  times: number;
  fault: (random: () => number) => Fault;
  /** Whether the run must succeed (retries recover) or fail clearly. */
  expect: "ok" | "fail";
}

const KiB = 1024;

/** The fault table. */
export const FAULT_CASES: FaultCase[] = [
  {
    name: "stall in the response at byte N",
    on: "download",
    times: 1,
    fault: (r) => ({ kind: "stall", direction: "response", atByte: Math.floor(r() * 64 * KiB) }),
    expect: "ok",
  },
  {
    name: "stall in the request body at byte N",
    on: "upload",
    times: 1,
    fault: (r) => ({ kind: "stall", direction: "request", atByte: 2 * KiB + Math.floor(r() * 256 * KiB) }),
    expect: "ok",
  },
  {
    name: "trickle below the idle threshold",
    on: "download",
    times: 1,
    fault: () => ({ kind: "trickle", bytes: 16 * KiB, pieceBytes: 2 * KiB, pauseMs: 200 }),
    expect: "ok",
  },
  {
    name: "connection reset in the response",
    on: "download",
    times: 2,
    fault: (r) => ({ kind: "reset", direction: "response", atByte: Math.floor(r() * 128 * KiB) }),
    expect: "ok",
  },
  {
    name: "connection reset in the request body",
    on: "upload",
    times: 2,
    fault: (r) => ({ kind: "reset", direction: "request", atByte: 1 + Math.floor(r() * 256 * KiB) }),
    expect: "ok",
  },
  {
    name: "half-close of the response",
    on: "download",
    times: 1,
    fault: (r) => ({ kind: "halfclose", atByte: Math.floor(r() * 64 * KiB) }),
    expect: "ok",
  },
  {
    name: "500/503 burst on uploads",
    on: "upload",
    times: 2,
    fault: (r) => ({ kind: "status", status: r() < 0.5 ? 500 : 503 }),
    expect: "ok",
  },
  {
    name: "503 burst on downloads",
    on: "download",
    times: 2,
    fault: () => ({ kind: "status", status: 503 }),
    expect: "ok",
  },
  {
    name: "429 with Retry-After",
    on: "upload",
    times: 1,
    fault: () => ({ kind: "status", status: 429, retryAfterSeconds: 1 }),
    expect: "ok",
  },
  {
    name: "truncated body with a correct Content-Length",
    on: "download",
    times: 1,
    fault: (r) => ({ kind: "truncate", atByte: Math.floor(r() * 128 * KiB) }),
    expect: "ok",
  },
  {
    name: "a keep-alive connection reused from the pool stalls",
    on: "reused",
    times: 1,
    fault: () => ({ kind: "stall", direction: "request", atByte: 0 }),
    expect: "ok",
  },
  {
    name: "every upload stalls (gives up within the bound)",
    on: "upload",
    times: Infinity,
    fault: (r) => ({ kind: "stall", direction: "request", atByte: 2 * KiB + Math.floor(r() * 64 * KiB) }),
    expect: "fail",
  },
  {
    name: "every download stalls (gives up within the bound)",
    on: "download",
    times: Infinity,
    fault: (r) => ({ kind: "stall", direction: "response", atByte: Math.floor(r() * 64 * KiB) }),
    expect: "fail",
  },
];

/** Whether a case runs on a raw-TCP target (sftp): it has no HTTP answers, bodies or requests on a reused connection to fault. */
export function applies(raw: boolean | undefined, c: FaultCase): boolean {
  return !raw || (c.on !== "reused" && TCP_FAULT_KINDS.includes(c.fault(seeded(1)).kind));
}

/** Outcome of one run. */
export interface FaultRun {
  ok: boolean;
  ms: number;
  error?: string;
}

/** A small seeded random source, so a failing run can be replayed from its seed. */
export function seeded(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** Rejects with a `HUNG: …` error when `p` has not settled within `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`HUNG: ${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, hung]).finally(() => clearTimeout(timer));
}

/**
 * Runs one case once: a fresh object name, upload then download through the
 * proxy. Throws (an assertion) when the run broke a rule: hung, left a
 * partial object, returned wrong bytes, failed where it must recover, or let
 * a secret into a line.
 */
export async function runFaultCase(target: FaultTarget, c: FaultCase, seed: number): Promise<FaultRun> {
  const random = seeded(seed);
  let hits = 0;
  const matches = (r: ProxiedRequest) =>
    c.on === "reused" ? r.reused === true : c.on === "upload" ? target.isUpload(r) : target.isDownload(r);
  const proxy = (target.raw ? startTcpFaultProxy : startFaultProxy)(target.port, (r) => {
    if (matches(r) && hits < c.times) {
      hits++;
      return c.fault(random);
    }
    return { kind: "pass" };
  }, { keepAlive: c.on === "reused" });
  const lines: string[] = [];
  const log = new Logger({ level: "debug", sink: (l) => lines.push(l) });
  const giveUp = c.expect === "fail";
  const backend = giveUp
    ? target.through(proxy.url, log, GIVE_UP_RETRIES, GIVE_UP_IDLE_MS)
    : target.through(proxy.url, log, FAULT_POLICY.retries);
  const name = `faults/${c.name.replace(/[^a-z0-9]+/gi, "-")}/${seed}`;
  const data = seededBytes(target.size, seed);
  const started = performance.now();
  let error: unknown;
  try {
    if (c.on === "download") await target.owner.put(name, streamOf(data, 256 * KiB), {});
    await within(
      (async () => {
        if (c.on !== "download") await backend.put(name, streamOf(data, 256 * KiB), {});
        const got = await readAll(await backend.get(name));
        assertEquals(got.length, data.length, "restored size");
        assert(got.every((b, i) => b === data[i]), "restored bytes differ");
      })(),
      FAULT_BOUND_MS,
      `${target.kind} "${c.name}"`,
    );
  } catch (err) {
    error = err;
  } finally {
    await backend.close?.();
    await proxy.close();
  }
  const ms = performance.now() - started;
  // For a failing run's message: what the client logged and what the proxy saw (ms, bytes each way).
  const trace = () =>
    [
      `seed ${seed}, ${Math.round(ms)} ms`,
      ...lines,
      ...proxy.log.map((e) =>
        `proxy: ${e.method} ${e.path.slice(0, 120)} ${e.fault} at=${e.at} end=${
          e.end ?? "-"
        } up=${e.up} down=${e.down}`
      ),
    ].join("\n");
  try {
    const text = [...lines, ...chain(error)].join("\n");
    for (const s of target.secrets) assert(!text.includes(s), `a secret reached a line:\n${text}`);
    assert(!String(error).includes("HUNG"), `${error}\n${trace()}`);
    assert(hits > 0, `the proxy never applied "${c.name}"`);
    if (c.expect === "ok") {
      assert(
        error === undefined,
        `"${c.name}" should recover but failed: ${chain(error).join(" <- ")}\n${trace()}`,
      );
      // A retried request says so: object, part/range, attempt and wait.
      if (c.times !== Infinity && c.fault(seeded(seed)).kind !== "trickle") {
        assert(lines.some((l) => l.startsWith("level=warn") && l.includes("retrying")), "no retry line");
      }
      // An injected status was seen as such (not waited out by the idle timeout, as when the proxy held
      // back its answer to a client waiting for `100 Continue`).
      if (c.fault(seeded(seed)).kind === "status") {
        assert(
          lines.some((l) => l.includes("retrying") && l.includes("injected")),
          `no retry names it\n${trace()}`,
        );
      }
    } else {
      assert(error !== undefined, `"${c.name}" should fail but succeeded`);
      assert(ms < faultBound(GIVE_UP_RETRIES, GIVE_UP_IDLE_MS), `failed after ${ms} ms, more than the bound`);
      if (c.on === "upload") {
        assertEquals(await target.owner.stat(name), null, "a failed upload left an object");
      }
    }
  } finally {
    await target.owner.delete(name).catch(() => {});
  }
  return { ok: error === undefined, ms, error: error === undefined ? undefined : chain(error).join(" <- ") };
}

/** An unresolvable endpoint fails clearly and quickly, naming the problem. */
export function runDnsCase(target: FaultTarget, endpoint: string): Promise<FaultRun> {
  return runUnreachableCase(target, endpoint, "DNS failure");
}

/**
 * A save to an endpoint that never answers properly (an unresolvable host, a
 * TLS handshake that stalls): it must fail within {@link faultBound} of {@link GIVE_UP_RETRIES},
 * never hang, and let no secret into a line. Returns the error chain for the
 * caller's checks.
 */
export async function runUnreachableCase(
  target: FaultTarget,
  endpoint: string,
  what: string,
): Promise<FaultRun> {
  const lines: string[] = [];
  const log = new Logger({ level: "debug", sink: (l) => lines.push(l) });
  const backend = target.through(endpoint, log, GIVE_UP_RETRIES, GIVE_UP_IDLE_MS);
  const started = performance.now();
  let error: unknown;
  try {
    await within(
      (async () => {
        await backend.put("faults/unreachable", streamOf(seededBytes(1000, 1)), {});
      })(),
      faultBound(GIVE_UP_RETRIES, GIVE_UP_IDLE_MS),
      `${target.kind} ${what}`,
    );
  } catch (err) {
    error = err;
  } finally {
    await backend.close?.();
  }
  const ms = performance.now() - started;
  assert(error !== undefined, `${what}: the save should fail`);
  assert(!String(error).includes("HUNG"), `${error}\n${lines.join("\n")}`);
  assert(
    ms < faultBound(GIVE_UP_RETRIES, GIVE_UP_IDLE_MS),
    `${what}: failed after ${ms} ms, more than the bound`,
  );
  const text = [...lines, ...chain(error)].join("\n");
  for (const s of target.secrets) assert(!text.includes(s), `a secret reached a line:\n${text}`);
  return { ok: false, ms, error: chain(error).join(" <- ") };
}

/** An error and its causes, one `Name: message` each. */
export function chain(err: unknown): string[] {
  const out: string[] = [];
  let cur = err;
  for (let i = 0; i < 6 && cur !== undefined; i++) {
    out.push(cur instanceof Error ? `${cur.name}: ${cur.message}` : String(cur));
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return out;
}

/** Runs per case from `CICACHE_FAULT_RUNS` (default 1). */
export function faultRuns(): number {
  const n = Number(Deno.env.get("CICACHE_FAULT_RUNS") ?? "1");
  return Number.isFinite(n) && n >= 1 ? Math.floor(n) : 1;
}

/**
 * Outcome of one load run: restores that got a complete version (all of
 * them, in the end), how often a restore was told cleanly that the object
 * was replaced under it (and restored again, as the message says), saves
 * that stored their version, saves that failed cleanly because another save
 * of the same key won (Azure discards the uncommitted blocks of a blob when
 * one block list is committed).
 */
export interface LoadRun {
  complete: number;
  replaced: number;
  saved: number;
  lost: number;
  ms: number;
}

/**
 * 8 concurrent saves and 8 concurrent restores of the same object name
 * (straight to the server): every restore yields one complete version (the
 * old one or one of the new ones, byte for byte, never a mix), restoring
 * again when it fails with the clean "replaced during the download" error;
 * every save stores its version or fails with a clear message; afterwards
 * the object is exactly one of the versions that were saved.
 *
 * A restore can be replaced at most once per save (8), so 9 attempts always
 * end with a complete version: whether any restore finishes between two
 * commits depends only on timing (on a busy machine none did).
 */
export async function runLoadCase(
  target: FaultTarget,
  seed: number,
  size = 2 * 1024 * 1024 + 3,
): Promise<LoadRun> {
  const name = `load/${seed}`;
  const versions = Array.from({ length: 9 }, (_, i) => seededBytes(size, seed * 100 + i));
  const which = (got: Uint8Array) =>
    versions.findIndex((v) => v.length === got.length && v.every((b, i) => b === got[i]));
  const started = performance.now();
  await target.owner.put(name, streamOf(versions[0], 256 * KiB), {});
  let complete = 0;
  let replaced = 0;
  const saved = new Set<number>();
  let lost = 0;
  try {
    await within(
      Promise.all([
        ...versions.slice(1).map(async (v, i) => {
          try {
            await target.owner.put(name, streamOf(v, 256 * KiB), {});
            saved.add(i + 1);
          } catch (err) {
            const text = chain(err).join(" ");
            if (!/another save|InvalidBlockList|retried|replaced/i.test(text)) throw err;
            lost++;
          }
        }),
        ...versions.slice(1).map(async () => {
          for (let attempt = 0; attempt < versions.length; attempt++) {
            try {
              const got = await readAll(await target.owner.get(name));
              assert(
                which(got) >= 0,
                `a restore got ${got.length} bytes that match no saved version (mixed?)`,
              );
              complete++;
              return;
            } catch (err) {
              if (!/replaced|changed|modified|precondition|412|ConditionNotMet/i.test(chain(err).join(" "))) {
                throw err;
              }
              replaced++;
            }
          }
        }),
      ]),
      FAULT_BOUND_MS,
      `${target.kind} load`,
    );
    const final = await readAll(await target.owner.get(name));
    assert(saved.has(which(final)), "after the saves the object is none of the versions that were saved");
  } finally {
    await target.owner.delete(name).catch(() => {});
  }
  return { complete, replaced, saved: saved.size, lost, ms: performance.now() - started };
}
