/**
 * Tests of lib/storage/transfer/send_body.ts against a real HTTP server on
 * 127.0.0.1 (Deno.serve): the bytes and headers that arrive, the answer as
 * a `Response`, progress, abort, a refused connection, kept-alive
 * connections and their close.
 *
 * @module
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { sendBody, uploadAgent } from "../lib/storage/transfer/send_body.ts";
import { seededBytes } from "./backend_conformance.ts";

const MiB = 1024 * 1024;
const seeded = (n: number, seed: number) => seededBytes(n, seed) as Uint8Array<ArrayBuffer>;

interface Seen {
  method: string;
  path: string;
  headers: Headers;
  body: Uint8Array;
  remote: string;
}

/** A server that records each request and answers with `answer(request)`. */
function server(answer: (seen: Seen) => Response | Promise<Response>) {
  const seen: Seen[] = [];
  const ac = new AbortController();
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req, info) => {
      const body = new Uint8Array(await req.arrayBuffer());
      const s = {
        method: req.method,
        path: new URL(req.url).pathname,
        headers: req.headers,
        body,
        remote: `${info.remoteAddr.hostname}:${info.remoteAddr.port}`,
      };
      seen.push(s);
      return await answer(s);
    },
  );
  return {
    url: (path: string) => new URL(`http://127.0.0.1:${srv.addr.port}${path}`),
    seen,
    async close() {
      ac.abort();
      await srv.finished;
    },
  };
}

Deno.test("send_body: the body and headers arrive whole; the answer is a Response with status, headers and body", async () => {
  const s = server((r) =>
    new Response(`got ${r.body.length}`, { status: 201, headers: { etag: '"abc"', "x-multi": "1" } })
  );
  try {
    const body = seeded(9 * MiB + 3, 7);
    let touched = 0;
    const res = await sendBody(s.url("/bucket/key"), {
      method: "PUT",
      headers: { "x-amz-meta-a": "b", authorization: "sig" },
      body,
      signal: new AbortController().signal,
      touch: () => touched++,
    });
    assertEquals(res.status, 201);
    assertEquals(res.headers.get("etag"), '"abc"');
    assertEquals(await res.text(), `got ${body.length}`);
    assertEquals(s.seen.length, 1);
    const got = s.seen[0];
    assertEquals(got.method, "PUT");
    assertEquals(got.path, "/bucket/key");
    assertEquals(got.headers.get("content-length"), String(body.length));
    assertEquals(got.headers.get("x-amz-meta-a"), "b");
    assertEquals(got.headers.get("authorization"), "sig");
    assertEquals(got.body, body);
    // one touch per 1 MiB slice written (10) and one for the answer
    assert(touched >= 10, `progress reported ${touched} times`);
  } finally {
    await s.close();
  }
});

Deno.test("send_body: an error status resolves (the caller decides) with its body; an empty answer has none", async () => {
  const s = server((r) =>
    r.path === "/empty"
      ? new Response(null, { status: 204 })
      : new Response("<Error><Code>SlowDown</Code></Error>", { status: 503, headers: { "retry-after": "2" } })
  );
  try {
    const signal = new AbortController().signal;
    const res = await sendBody(s.url("/busy"), { method: "PUT", headers: {}, body: seeded(MiB, 1), signal });
    assertEquals(res.status, 503);
    assertEquals(res.headers.get("retry-after"), "2");
    assertEquals(await res.text(), "<Error><Code>SlowDown</Code></Error>");
    const empty = await sendBody(s.url("/empty"), {
      method: "PUT",
      headers: {},
      body: seeded(10, 2),
      signal,
    });
    assertEquals(empty.status, 204);
    assertEquals(empty.body, null);
  } finally {
    await s.close();
  }
});

Deno.test("send_body: an abort during the upload rejects with the signal's reason", async () => {
  // A raw listener that reads nothing: the client's writes back up, so the upload is still going when aborted.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) conns.push(c);
  })();
  try {
    const ac = new AbortController();
    const reason = new Error("stop now");
    const sending = sendBody(new URL(`http://127.0.0.1:${listener.addr.port}/k`), {
      method: "PUT",
      headers: {},
      body: seeded(32 * MiB, 3),
      signal: ac.signal,
    });
    await new Promise((r) => setTimeout(r, 200));
    ac.abort(reason);
    const err = await assertRejects(() => sending);
    assertEquals(err, reason);
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const c of conns) c.close();
  }
});

Deno.test("send_body: a refused connection rejects with the Node error code the retry reads", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const err = await assertRejects(() =>
    sendBody(new URL(`http://127.0.0.1:${port}/k`), {
      method: "PUT",
      headers: {},
      body: seeded(MiB, 4),
      signal: new AbortController().signal,
    })
  );
  assertEquals((err as { code?: string }).code, "ECONNREFUSED");
});

Deno.test("send_body: one upload agent keeps one connection for sequential requests; close ends it", async () => {
  const s = server(() => new Response(null, { status: 200, headers: { etag: '"p"' } }));
  const agent = uploadAgent(s.url("/"), 2);
  try {
    const signal = new AbortController().signal;
    for (let i = 0; i < 3; i++) {
      const res = await sendBody(s.url(`/part${i}`), {
        method: "PUT",
        headers: {},
        body: seeded(MiB, i),
        signal,
        agent,
      });
      assertEquals(res.status, 200);
    }
    assertEquals(s.seen.map((x) => x.path), ["/part0", "/part1", "/part2"]);
    assertEquals(new Set(s.seen.map((x) => x.remote)).size, 1, "the three requests share one connection");
  } finally {
    agent.close();
    await s.close();
  }
});

Deno.test("send_body: a file body is streamed from disk; an answer cancelled unread ends cleanly", async () => {
  const s = server((r) => new Response(r.path === "/big" ? seeded(3 * MiB, 9) : "short answer"));
  const dir = await Deno.makeTempDir();
  try {
    const data = seeded(2 * MiB + 17, 8);
    await Deno.writeFile(`${dir}/part`, data);
    const signal = new AbortController().signal;
    const res = await sendBody(s.url("/file"), {
      method: "PUT",
      headers: {},
      body: { path: `${dir}/part`, size: data.length },
      signal,
    });
    assertEquals(s.seen[0].body, data);
    assertEquals(s.seen[0].headers.get("content-length"), String(data.length));
    // Cancelled before reading (its end may already be on the way), and a large one cancelled midway:
    // neither may throw into the event loop afterwards (the test would fail on it).
    await res.body!.cancel();
    const big = await sendBody(s.url("/big"), { method: "PUT", headers: {}, body: seeded(10, 1), signal });
    const reader = big.body!.getReader();
    const first = await reader.read();
    assert(!first.done && first.value.length > 0, "the answer's first bytes");
    await reader.cancel();
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    await s.close();
    await Deno.remove(dir, { recursive: true });
  }
});
