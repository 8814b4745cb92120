import { promises as fs, readFileSync } from "node:fs";
import * as path from "node:path";
import { isCofferError } from "../../provider/common/errors";
import { cloudDeps, type RequestEvent } from "../../provider/openstack/deps";
import { listAll } from "../../provider/targets/store";
import { SwiftAuth, SwiftStore, tempAuth } from "../../provider/targets/swift";
import { randomFileIn } from "../support/storeConformance";
import {
  SwiftLoop,
  containerListing,
  loopAuth,
  swiftLoop,
  swiftLoopNow,
  swiftLoopUp,
  swiftMissingNote,
  swiftStoreOn,
  useSwiftStores,
} from "../support/swiftLoop";
import { useTempDir } from "../support/tempDir";

// SwiftStore on a real Swift cluster (tools/swift/swiftloop.sh): large objects, aborts, a dead object server.
jest.setTimeout(120_000);

const swift = swiftLoop();
const describeSwift = swift ? describe : describe.skip;
const MiB = 1024 * 1024;

/** Whether the process `pid` runs (a zombie does not: PID 1 reaps a killed server late on these machines). */
const running = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

/** A segment PUT that Swift accepted (201), as the store's request observer sees it. */
const storedSegment = (store: () => SwiftStore | undefined, event: RequestEvent) =>
  event.method === "PUT" && event.status === 201 && event.url.includes(`/${store()?.segmentsContainer}/`);

describeSwift(`SwiftStore on the loopback Swift cluster${swift ? "" : ` (${swiftMissingNote})`}`, () => {
  const tempDir = useTempDir();
  const makeStore = useSwiftStores(swift);
  const loop = swift as SwiftLoop;
  const segmentsOf = (store: SwiftStore) => containerListing(loop, store.segmentsContainer, store.folder);

  test("a file of several segments is a Static Large Object, listed once, read back byte for byte", async () => {
    const store = makeStore({ segmentBytes: MiB });
    const { file, bytes, sha256 } = await randomFileIn(tempDir(), "disk.raw", 5 * MiB + 3);
    expect(await store.put("sets/z/s1/vm.qcow2", file)).toEqual({ sizeBytes: bytes.length, sha256 });

    const { storageUrl, token } = await loopAuth(loop).session();
    const head = await fetch(`${storageUrl}/${store.container}/${store.folder}sets/z/s1/vm.qcow2`, {
      method: "HEAD",
      headers: { "X-Auth-Token": token },
    });
    expect(head.headers.get("x-static-large-object")).toBe("True");
    expect(await segmentsOf(store)).toHaveLength(6);
    expect(await listAll(store, "")).toEqual([{ key: "sets/z/s1/vm.qcow2", sizeBytes: bytes.length }]);
    expect(await store.stat("sets/z/s1/vm.qcow2")).toEqual({ sizeBytes: bytes.length });

    const copy = path.join(tempDir(), "copy.raw");
    await store.get("sets/z/s1/vm.qcow2", copy);
    expect((await fs.readFile(copy)).equals(bytes)).toBe(true);
  });

  test("remove() of a large object removes its segments too", async () => {
    const store = makeStore({ segmentBytes: MiB });
    const { file } = await randomFileIn(tempDir(), "disk.raw", 3 * MiB);
    await store.put("a/vm.qcow2", file);
    await store.writeTextAtomic("a/manifest.json", "{}");
    expect(await segmentsOf(store)).toHaveLength(3);
    await store.remove("a/vm.qcow2");
    expect(await segmentsOf(store)).toEqual([]);
    expect(await store.stat("a/vm.qcow2")).toBeUndefined();
    expect((await listAll(store, "")).map((o) => o.key)).toEqual(["a/manifest.json"]);
  });

  test("a large object put over another removes the old one's segments", async () => {
    const store = makeStore({ segmentBytes: MiB });
    const first = await randomFileIn(tempDir(), "first.raw", 3 * MiB);
    const second = await randomFileIn(tempDir(), "second.raw", 4 * MiB + 1);
    await store.put("vm.qcow2", first.file);
    const firstSegments = await segmentsOf(store);
    expect(firstSegments).toHaveLength(3);
    await store.put("vm.qcow2", second.file);
    const secondSegments = await segmentsOf(store);
    expect(secondSegments).toHaveLength(5);
    expect(secondSegments.filter((name) => firstSegments.includes(name))).toEqual([]);
    const copy = path.join(tempDir(), "copy.raw");
    await store.get("vm.qcow2", copy);
    expect((await fs.readFile(copy)).equals(second.bytes)).toBe(true);
  });

  test("a put aborted mid-way leaves no object and no segments", async () => {
    const controller = new AbortController();
    let store: SwiftStore | undefined;
    const stored: string[] = [];
    store = makeStore({
      segmentBytes: MiB,
      segmentConcurrency: 2,
      deps: cloudDeps({
        onRequest: (event) => {
          if (!storedSegment(() => store, event)) return;
          stored.push(event.url);
          if (stored.length === 2) controller.abort(new Error("stopped by the test"));
        },
      }),
    });
    const { file } = await randomFileIn(tempDir(), "disk.raw", 8 * MiB);
    await expect(store.put("sets/z/s1/vm.qcow2", file, { signal: controller.signal })).rejects.toThrow();
    expect(stored.length).toBeGreaterThanOrEqual(2); // segments were stored before the abort, and swept
    expect(await store.stat("sets/z/s1/vm.qcow2")).toBeUndefined();
    expect(await listAll(store, "")).toEqual([]);
    expect(await segmentsOf(store)).toEqual([]);
  });

  test("with one of three object servers killed mid-put, the put completes and reads back (quorum 2)", async () => {
    const victim = loop.objectServers[1];
    expect(running(victim.pid)).toBe(true);
    let store: SwiftStore | undefined;
    let killedAfter = 0;
    const segmentsStored: string[] = [];
    store = makeStore({
      segmentBytes: MiB,
      deps: cloudDeps({
        onRequest: (event) => {
          if (!storedSegment(() => store, event)) return;
          segmentsStored.push(event.url);
          if (segmentsStored.length === 2) {
            process.kill(victim.pid, "SIGKILL");
            killedAfter = segmentsStored.length;
          }
        },
      }),
    });
    const { file, bytes, sha256 } = await randomFileIn(tempDir(), "disk.raw", 12 * MiB);
    try {
      expect(await store.put("sets/z/s1/vm.qcow2", file)).toEqual({ sizeBytes: bytes.length, sha256 });
      expect(killedAfter).toBe(2);
      expect(segmentsStored).toHaveLength(12);
      expect(running(victim.pid)).toBe(false);
      const copy = path.join(tempDir(), "copy.raw");
      await store.get("sets/z/s1/vm.qcow2", copy);
      expect((await fs.readFile(copy)).equals(bytes)).toBe(true);
    } finally {
      await swiftLoopUp(loop);
    }
    const restarted = swiftLoopNow().objectServers[1];
    expect(restarted.pid).not.toBe(victim.pid);
    expect(running(restarted.pid)).toBe(true);
    expect(await (await fetch(`http://127.0.0.1:${restarted.port}/healthcheck`)).text()).toBe("OK");
    // With all three servers up again, the object still reads back whole.
    const again = path.join(tempDir(), "again.raw");
    await store.get("sets/z/s1/vm.qcow2", again);
    expect((await fs.readFile(again)).equals(bytes)).toBe(true);
  });

  test("of four racing exclusive writes exactly one wins, and its text is the one stored", async () => {
    const store = makeStore();
    const texts = ["one", "two", "three", "four"];
    const results = await Promise.all(texts.map((text) => store.writeTextExclusive(".coffer/target.json", text)));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await store.readText(".coffer/target.json")).toBe(texts[results.indexOf(true)]);
  });

  test("listing pages through the container with a marker, and never shows a segment", async () => {
    const store = makeStore({ segmentBytes: MiB, listLimit: 2 });
    const { file } = await randomFileIn(tempDir(), "disk.raw", 2 * MiB + 5);
    await store.put("sets/z/s1/vm.qcow2", file);
    for (const key of ["sets/z/s1/manifest.json", "sets/z/s2/manifest.json", "top.json", "zz/last.json"]) {
      await store.writeTextAtomic(key, key);
    }
    expect((await listAll(store, "")).map((o) => o.key)).toEqual([
      "sets/z/s1/manifest.json",
      "sets/z/s1/vm.qcow2",
      "sets/z/s2/manifest.json",
      "top.json",
      "zz/last.json",
    ]);
    expect((await listAll(store, "sets/z")).map((o) => o.key)).toHaveLength(3);
    expect(await segmentsOf(store)).toHaveLength(3);
  });

  test("a token Swift refuses is renewed once, and the request goes through", async () => {
    const real = loopAuth(loop);
    const handedOut: string[] = [];
    const auth: SwiftAuth = {
      describe: real.describe,
      secrets: real.secrets,
      async session(refused) {
        const session = await real.session(refused);
        // The first session's token is one Swift never issued (as after memcached lost it).
        const token = handedOut.length === 0 ? "AUTH_tk0000000000000000000000000000000" : session.token;
        handedOut.push(token);
        return { ...session, token };
      },
    };
    const store = makeStore({ auth });
    await store.writeTextAtomic("doc.json", "renewed");
    expect(handedOut).toHaveLength(2);
    expect(handedOut[1]).not.toBe(handedOut[0]);
    expect(await store.readText("doc.json")).toBe("renewed");
  });

  test("errors name the key and the HTTP status, and never the key or a token", async () => {
    const auth = loopAuth(loop);
    const store = makeStore({ auth });
    const error = await store.get("sets/missing.qcow2", path.join(tempDir(), "out.raw")).catch((e) => e);
    expect(isCofferError(error)).toBe(true);
    expect(error.message).toContain("sets/missing.qcow2");
    expect(error.message).toContain("HTTP 404");
    const { token } = await auth.session();
    expect(error.message).not.toContain(token);

    const wrongKey = "wrong-key-8d1f3b";
    const refused = swiftStoreOn(loop, { auth: tempAuth({ authUrl: loop.authUrl, user: loop.user, key: wrongKey }) });
    const denied = await refused.readText("doc.json").catch((e) => e);
    expect(denied.code).toBe("CLOUD_AUTH_FAILED");
    expect(denied.message).toContain("HTTP 401");
    expect(`${denied.message} ${denied.stack} ${denied.cause?.message ?? ""}`).not.toContain(wrongKey);
    expect(JSON.stringify(denied)).not.toContain(wrongKey);
  });
});
