import { inspect } from "node:util";
import { S3Store, S3StoreOptions } from "../../provider/targets/s3";

// What S3Store checks before it sends anything, and its errors without a service; everything else about it
// runs against Swift's S3 API in test/swift.

const secret = "s3-secret-7c41d2e9";
const options = (more: Partial<S3StoreOptions> = {}): S3StoreOptions => ({
  endpoint: "http://127.0.0.1:1",
  bucket: "backups",
  prefix: "coffer/target-a",
  credentials: { accessKeyId: "coffer:backup", secretAccessKey: secret },
  ...more,
});

describe("S3Store", () => {
  test("names where it is by bucket, folder, access key id and endpoint, never by the secret", () => {
    const store = new S3Store(options());
    expect(store.kind).toBe("s3");
    expect(store.location).toBe("s3://backups/coffer/target-a/ (coffer:backup at http://127.0.0.1:1)");
    expect(store.locate("sets/z/s/vm.qcow2")).toBe("s3://backups/coffer/target-a/sets/z/s/vm.qcow2");
    expect(new S3Store(options({ endpoint: undefined, region: "eu-west-1" })).location).toBe(
      "s3://backups/coffer/target-a/ (coffer:backup at AWS S3 (eu-west-1))",
    );
    expect(inspect(store, { depth: 10 })).not.toContain(secret);
  });

  test.each<[string, Partial<S3StoreOptions>, RegExp]>([
    ["parts under S3's minimum of 5 MiB", { partBytes: 1024 * 1024 }, /partBytes is 5 MiB or more/],
    ["no secret", { credentials: { accessKeyId: "a", secretAccessKey: "" } }, /access key id and its secret/],
    ["a bucket with a '/'", { bucket: "a/b" }, /can't name an S3 bucket/],
    ["a prefix that is not a folder of keys", { prefix: "../up" }, /is not a key of a store/],
  ])("refuses %s", (_what, more, message) => {
    expect(() => new S3Store(options(more))).toThrow(message);
  });

  test("an endpoint nobody listens on: the retries are logged, the error names the object and the fix", async () => {
    const logged: string[] = [];
    const store = new S3Store(
      options({ maxRetries: 2, deps: { sleep: async () => undefined, log: (line) => logged.push(line) } }),
    );
    const error = await store.readText("doc.json").catch((e) => e);
    expect(error.code).toBe("CLOUD_UNAVAILABLE");
    const where = "(s3://backups/coffer/target-a/doc.json at http://127.0.0.1:1)";
    expect(error.message.startsWith(`s3 object doc.json ${where}: no answer (`)).toBe(true);
    expect(error.message).toContain("ECONNREFUSED");
    expect(error.message).toContain("Check that the endpoint is right and reachable from this machine.");
    expect(logged).toHaveLength(2);
    expect(logged[0]).toMatch(/; retry 1 in 500 ms$/);
    expect(`${error.message} ${error.stack} ${error.cause?.stack} ${logged.join(" ")}`).not.toContain(secret);
  });
});
