import { HeadBucketCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { isCofferError } from "../../provider/common/errors";
import { S3Store } from "../../provider/targets/s3";
import { listAll } from "../../provider/targets/store";
import { randomFileIn } from "../support/storeConformance";
import {
  SwiftLoop,
  loopS3,
  s3StoreOn,
  s3TestBucket,
  swiftLoop,
  swiftMissingNote,
  uploadsUnder,
  useS3Stores,
} from "../support/swiftLoop";
import { useTempDir } from "../support/tempDir";

// S3Store on Swift's S3 API (s3api) of the loopback cluster: multipart puts, aborts, errors, what it never sends.
jest.setTimeout(120_000);

const swift = swiftLoop();
const describeSwift = swift ? describe : describe.skip;
const MiB = 1024 * 1024;

/** One request the store's SDK client sent, as it went out, and its HTTP status. */
interface SeenRequest {
  command: string;
  method: string;
  query: string[];
  headers: string[];
  status?: number;
}

/**
 * Every request `store` sends from now on (a middleware on its client, after signing); `onDone` sees each as it
 * ends. `inFlight()` is the largest number of requests that were under way at once.
 */
function watch(store: S3Store, onDone: (request: SeenRequest) => void = () => undefined) {
  const seen: SeenRequest[] = [];
  let under = 0;
  let most = 0;
  store.client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { method: string; query?: Record<string, unknown>; headers: object };
      const entry: SeenRequest = {
        command: context.commandName ?? "",
        method: request.method,
        query: Object.keys(request.query ?? {}),
        headers: Object.keys(request.headers).map((name) => name.toLowerCase()),
      };
      seen.push(entry);
      most = Math.max(most, ++under);
      try {
        const result = await next(args);
        entry.status = (result.response as { statusCode?: number }).statusCode;
        return result;
      } catch (error) {
        entry.status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        throw error;
      } finally {
        under--;
        onDone(entry);
      }
    },
    { step: "finalizeRequest", priority: "low", name: "testWatch" },
  );
  return { seen, inFlight: () => most };
}

describeSwift(`S3Store on the loopback Swift cluster's S3 API${swift ? "" : ` (${swiftMissingNote})`}`, () => {
  const tempDir = useTempDir();
  const makeStore = useS3Stores(swift);
  const loop = swift as SwiftLoop;
  const etagOf = async (store: S3Store, key: string) =>
    (await store.client.send(new HeadObjectCommand({ Bucket: store.bucket, Key: store.folder + key }))).ETag;

  test("a file of several parts is one multipart upload sent in parallel, listed once, read back whole", async () => {
    const store = makeStore({ partBytes: 5 * MiB, partConcurrency: 4 });
    const { seen, inFlight } = watch(store);
    const { file, bytes, sha256 } = await randomFileIn(tempDir(), "disk.raw", 20 * MiB + 3);
    expect(await store.put("sets/z/s1/vm.qcow2", file)).toEqual({ sizeBytes: bytes.length, sha256 });

    const parts = seen.filter((r) => r.command === "UploadPartCommand");
    expect(parts).toHaveLength(5);
    expect(parts.every((r) => r.status === 200)).toBe(true);
    expect(seen.filter((r) => r.command === "CompleteMultipartUploadCommand")).toHaveLength(1);
    expect(inFlight()).toBeGreaterThan(1);
    // S3's multipart ETag: the MD5 of the parts' MD5s, and their number.
    expect(await etagOf(store, "sets/z/s1/vm.qcow2")).toMatch(/^"[0-9a-f]{32}-5"$/);
    expect(await listAll(store, "")).toEqual([{ key: "sets/z/s1/vm.qcow2", sizeBytes: bytes.length }]);
    expect(await store.stat("sets/z/s1/vm.qcow2")).toEqual({ sizeBytes: bytes.length });
    expect(await uploadsUnder(store)).toEqual([]);

    const copy = path.join(tempDir(), "copy.raw");
    await store.get("sets/z/s1/vm.qcow2", copy);
    expect((await fs.readFile(copy)).equals(bytes)).toBe(true);

    // A second put replaces it whole; a small file is one PUT with its Content-MD5.
    const small = await randomFileIn(tempDir(), "small.raw", 64 * 1024);
    expect(await store.put("sets/z/s1/vm.qcow2", small.file)).toEqual({
      sizeBytes: small.bytes.length,
      sha256: small.sha256,
    });
    expect(seen.filter((r) => r.command === "PutObjectCommand").map((r) => r.headers)).toEqual([
      expect.arrayContaining(["content-md5"]),
    ]);
    await store.get("sets/z/s1/vm.qcow2", copy);
    expect((await fs.readFile(copy)).equals(small.bytes)).toBe(true);
  });

  test("a put aborted mid-way leaves the old object, and no new object and no multipart upload", async () => {
    const controller = new AbortController();
    let partsStored = 0;
    const store = makeStore({ partBytes: 5 * MiB, partConcurrency: 2 });
    const { seen } = watch(store, (request) => {
      if (request.command !== "UploadPartCommand" || request.status !== 200) return;
      if (++partsStored === 2) controller.abort(new Error("stopped by the test"));
    });
    await store.writeTextAtomic("sets/z/s1/vm.qcow2", "the old object");
    const { file } = await randomFileIn(tempDir(), "disk.raw", 30 * MiB);

    const error = await store.put("sets/z/s1/vm.qcow2", file, { signal: controller.signal }).catch((e) => e);
    expect(error.code).toBe("ABORTED");
    expect(error.message).toContain(`s3://${s3TestBucket}/${store.folder}sets/z/s1/vm.qcow2`);
    expect(partsStored).toBeGreaterThanOrEqual(2); // there were parts to remove
    expect(seen.filter((r) => r.command === "UploadPartCommand").length).toBeLessThan(6);
    expect(seen.filter((r) => r.command === "AbortMultipartUploadCommand").map((r) => r.status)).toEqual([204]);
    expect(seen.some((r) => r.command === "CompleteMultipartUploadCommand")).toBe(false);
    expect(await uploadsUnder(store)).toEqual([]);
    expect(await store.readText("sets/z/s1/vm.qcow2")).toBe("the old object");
    expect(await listAll(store, "")).toEqual([{ key: "sets/z/s1/vm.qcow2", sizeBytes: 14 }]);
  });

  test("wrong credentials give an error that says so and names the bucket, and never the secret", async () => {
    const wrongSecret = `wrong-secret-${randomBytes(6).toString("hex")}`;
    const refused = s3StoreOn(loop, { credentials: { accessKeyId: loop.user, secretAccessKey: wrongSecret } });
    const errors = [
      await refused.readText("doc.json").catch((e) => e),
      await refused.assertReachable().catch((e) => e),
      await refused.writeTextAtomic("doc.json", "text").catch((e) => e),
      // A HEAD's 403 has no body to say why.
      await refused.stat("doc.json").catch((e) => e),
    ];
    expect(errors.map((e) => e.code)).toEqual([
      "CLOUD_AUTH_FAILED",
      "CLOUD_AUTH_FAILED",
      "CLOUD_AUTH_FAILED",
      "CLOUD_FORBIDDEN",
    ]);
    for (const error of errors) {
      expect(isCofferError(error)).toBe(true);
      expect(error.message).toContain(`s3://${s3TestBucket}`);
      expect(error.message).toContain(loopS3(loop).endpoint);
      expect(error.message).toMatch(/check the access key id and its secret/);
      expect(`${error.message} ${error.stack} ${error.cause?.message} ${error.cause?.stack}`).not.toContain(
        wrongSecret,
      );
      expect(JSON.stringify(error)).not.toContain(wrongSecret);
    }
    expect(errors[0].message).toContain("HTTP 403 SignatureDoesNotMatch");
    expect(errors[1].message).toContain(`s3 bucket ${s3TestBucket}`);

    const unknownUser = s3StoreOn(loop, { credentials: { accessKeyId: "nobody:none", secretAccessKey: wrongSecret } });
    const denied = await unknownUser.readText("doc.json").catch((e) => e);
    expect(denied.code).toBe("CLOUD_AUTH_FAILED");
    expect(denied.message).not.toContain(wrongSecret);
  });

  test("a bucket that is not there: every operation says so, names the fix, and makes no bucket", async () => {
    const bucket = `coffer-missing-${randomBytes(4).toString("hex")}`;
    const store = s3StoreOn(loop, { bucket });
    const { file } = await randomFileIn(tempDir(), "disk.raw", 1024);
    const errors = [
      await store.assertReachable().catch((e) => e),
      await store.readText("doc.json").catch((e) => e),
      await store.stat("doc.json").catch((e) => e),
      await listAll(store, "").catch((e) => e),
      await store.writeTextAtomic("doc.json", "x").catch((e) => e),
      await store.put("vm.qcow2", file).catch((e) => e),
    ];
    for (const error of errors) {
      expect(error.code).toBe("TARGET_UNREACHABLE");
      expect(error.message).toContain(`There is no bucket ${bucket}: create it`);
    }
    const head = await store.client.send(new HeadBucketCommand({ Bucket: bucket })).catch((e) => e);
    expect(head.$metadata.httpStatusCode).toBe(404);
    expect(errors[0].message).toContain(`s3 bucket ${bucket} (s3://${bucket} at ${loopS3(loop).endpoint})`);
    expect(errors[1].message).toContain(`s3 object doc.json (s3://${bucket}/${store.folder}doc.json`);
  });

  test("listing pages with continuation tokens", async () => {
    const store = makeStore({ listLimit: 2 });
    const keys = ["sets/z/s1/manifest.json", "sets/z/s1/vm.qcow2", "sets/z/s2/manifest.json", "top.json", "zz/x"];
    for (const key of keys) await store.writeTextAtomic(key, key);
    const { seen } = watch(store);
    expect((await listAll(store, "")).map((o) => o.key)).toEqual(keys);
    const pages = seen.filter((r) => r.command === "ListObjectsV2Command");
    expect(pages).toHaveLength(3);
    expect(pages.slice(1).every((r) => r.query.includes("continuation-token"))).toBe(true);
    expect((await listAll(store, "sets/z")).map((o) => o.key)).toEqual(keys.slice(0, 3));
  });

  test("s3api refuses conditional PUTs, so exclusive writes claim: of four racing, exactly one wins", async () => {
    const logged: string[] = [];
    const store = makeStore({ deps: { log: (line) => logged.push(line) } });
    const texts = ["one", "two", "three", "four"];
    const results = await Promise.all(texts.map((text) => store.writeTextExclusive(".coffer/target.json", text)));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await store.readText(".coffer/target.json")).toBe(texts[results.indexOf(true)]);
    expect(logged.some((line) => line.includes("does not take conditional PUTs (If-None-Match)"))).toBe(true);
    expect(await store.writeTextExclusive(".coffer/target.json", "later")).toBe(false);
    expect(await store.readText(".coffer/target.json")).toBe(texts[results.indexOf(true)]);
  });

  test("no request is ever an Object Lock call (s3api would ignore it, or overwrite the object with it)", async () => {
    const store = makeStore({ partBytes: 5 * MiB });
    const { seen } = watch(store);
    const { file } = await randomFileIn(tempDir(), "disk.raw", 11 * MiB);
    await store.assertReachable();
    await store.put("sets/z/s1/vm.qcow2", file);
    await store.writeTextExclusive(".coffer/target.json", "identity");
    await store.writeTextAtomic("sets/z/s1/manifest.json", "{}");
    await store.get("sets/z/s1/vm.qcow2", path.join(tempDir(), "copy.raw"));
    await store.stat("sets/z/s1/vm.qcow2");
    await listAll(store, "");
    await store.remove("sets/z/s1/vm.qcow2");
    expect(seen.length).toBeGreaterThan(10);
    for (const request of seen) {
      expect(request.query.filter((name) => /object-lock|retention|legal-hold/.test(name))).toEqual([]);
      expect(request.headers.filter((name) => /object-lock|bypass-governance/.test(name))).toEqual([]);
    }
  });
});
