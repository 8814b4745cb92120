import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  ListMultipartUploadsCommand,
  type MultipartUpload,
} from "@aws-sdk/client-s3";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { promisify } from "node:util";
import { S3Store, S3StoreOptions } from "../../provider/targets/s3";
import { listAll } from "../../provider/targets/store";
import { SwiftAuth, SwiftStore, SwiftStoreOptions, tempAuth } from "../../provider/targets/swift";

/** One of the three object servers of the loopback cluster. */
export interface LoopbackObjectServer {
  name: string;
  port: number;
  pid: number;
  /** its devices folder (one device, `d`) */
  devices: string;
}

/** What tools/swift/swiftloop.sh up writes to <state>/swift.json. */
export interface SwiftLoop {
  /** tempauth: http://127.0.0.1:6280/auth/v1.0 */
  authUrl: string;
  /** "account:user" */
  user: string;
  key: string;
  proxy: { port: number; pid: number };
  objectServers: LoopbackObjectServer[];
  replicas: number;
  state: string;
  /** swiftloop.sh: its `up` starts what is not running (an object server a test stopped) and rewrites swift.json */
  script: string;
}

export const swiftMissingNote =
  "skipped: the loopback Swift cluster is not up (COFFER_SWIFT=1 tools/test.sh --selectProjects swift starts it)";

/**
 * The loopback Swift cluster described by the file in COFFER_SWIFTLOOP (tools/test.sh sets it after
 * `swiftloop.sh up`), or undefined when it is not up: the caller skips, naming swiftMissingNote in its
 * describe title. In CI a missing cluster is an error: the swift tier must run there.
 */
export function swiftLoop(): SwiftLoop | undefined {
  const file = process.env.COFFER_SWIFTLOOP;
  if (file && existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as SwiftLoop;
  if (process.env.CI === "true") {
    const missing = file ? `${file} does not exist` : "COFFER_SWIFTLOOP is not set";
    throw new Error(
      `the swift tier needs the loopback Swift cluster in CI, but ${missing}: ` +
        "run tools/test.sh, which starts it with tools/swift/swiftloop.sh",
    );
  }
  return undefined;
}

/** swift.json as it is now (`up` rewrites it with the PID of a server it started again). */
export function swiftLoopNow(): SwiftLoop {
  return JSON.parse(readFileSync(process.env.COFFER_SWIFTLOOP!, "utf8")) as SwiftLoop;
}

/** The container the swift tier's stores share; each store has a folder of its own in it. */
export const testContainer = "coffer-tests";

/** tempauth for the loopback cluster's user. */
export const loopAuth = (swift: SwiftLoop): SwiftAuth =>
  tempAuth({ authUrl: swift.authUrl, user: swift.user, key: swift.key });

/** A SwiftStore on the loopback cluster in a new, empty folder of `testContainer`. */
export function swiftStoreOn(swift: SwiftLoop, options: Partial<SwiftStoreOptions> = {}): SwiftStore {
  return new SwiftStore({
    auth: loopAuth(swift),
    container: testContainer,
    prefix: `run-${randomBytes(6).toString("hex")}`,
    ...options,
  });
}

/**
 * Makes SwiftStores in folders of their own (call inside a describe); after each test, the objects
 * of the stores it made are removed, so runs don't pile up data in the cluster.
 */
export function useSwiftStores(swift: SwiftLoop | undefined): (options?: Partial<SwiftStoreOptions>) => SwiftStore {
  let made: SwiftStore[] = [];
  afterEach(async () => {
    const stores = made;
    made = [];
    for (const store of stores) for (const { key } of await listAll(store, "")) await store.remove(key);
  });
  return (options = {}) => {
    const store = swiftStoreOn(swift!, options);
    made.push(store);
    return store;
  };
}

/** The names in `container` under `prefix`, straight from Swift's listing (segments included). */
export async function containerListing(swift: SwiftLoop, container: string, prefix: string): Promise<string[]> {
  const { storageUrl, token } = await loopAuth(swift).session();
  const url = `${storageUrl}/${encodeURIComponent(container)}?format=json&prefix=${encodeURIComponent(prefix)}`;
  const response = await fetch(url, { headers: { "X-Auth-Token": token } });
  if (response.status === 404) return [];
  if (!response.ok) throw new Error(`listing ${container}: HTTP ${response.status}`);
  return ((await response.json()) as { name: string }[]).map((o) => o.name);
}

/**
 * Starts again whatever of the cluster is not running (an object server a test stopped), waiting until it answers.
 * While a server is stopped, other test files' writes land on 2 of 3 replicas, and an object deleted then can
 * come back from the restarted server's stale copy on a read: keep such windows short (swiftStore.test.ts: ~2 s).
 */
export async function swiftLoopUp(swift: SwiftLoop): Promise<void> {
  await promisify(execFile)(swift.script, ["up"], {
    env: { ...process.env, COFFER_SWIFTLOOP_DIR: swift.state },
    timeout: 120_000,
  });
}

/**
 * Swift's S3 API (s3api in the proxy's pipeline) on the loopback proxy: with tempauth the access key id is
 * "account:user" and the secret is the user's key; path-style addressing, region us-east-1 (s3api's location).
 */
export const loopS3 = (swift: SwiftLoop): Pick<S3StoreOptions, "endpoint" | "region" | "credentials"> => ({
  endpoint: `http://127.0.0.1:${swift.proxy.port}`,
  region: "us-east-1",
  credentials: { accessKeyId: swift.user, secretAccessKey: swift.key },
});

/** The bucket the swift tier's S3 stores share (a Swift container of that name); each has a folder in it. */
export const s3TestBucket = "coffer-s3-tests";

/** An S3Store on the loopback cluster's S3 API in a new, empty folder of `s3TestBucket`. */
export function s3StoreOn(swift: SwiftLoop, options: Partial<S3StoreOptions> = {}): S3Store {
  return new S3Store({
    ...loopS3(swift),
    bucket: s3TestBucket,
    prefix: `run-${randomBytes(6).toString("hex")}`,
    ...options,
  });
}

/** The multipart uploads under way in the store's folder, as the S3 API lists them. */
export async function uploadsUnder(store: S3Store): Promise<MultipartUpload[]> {
  const listing = await store.client.send(
    new ListMultipartUploadsCommand({ Bucket: store.bucket, Prefix: store.folder || undefined }),
  );
  return listing.Uploads ?? [];
}

/**
 * Makes S3Stores in folders of their own (call inside a describe). The test bucket is made before the
 * first test (S3Store never makes one); after each test, the objects and any multipart uploads of the
 * stores it made are removed, so runs don't pile up data in the cluster.
 */
export function useS3Stores(swift: SwiftLoop | undefined): (options?: Partial<S3StoreOptions>) => S3Store {
  let made: S3Store[] = [];
  beforeAll(async () => {
    if (!swift) return;
    const { client } = s3StoreOn(swift);
    await client.send(new CreateBucketCommand({ Bucket: s3TestBucket })).catch((error) => {
      if (error?.name !== "BucketAlreadyOwnedByYou" && error?.name !== "BucketAlreadyExists") throw error;
    });
  });
  afterEach(async () => {
    const stores = made;
    made = [];
    for (const store of stores) {
      for (const { key } of await listAll(store, "")) await store.remove(key);
      for (const upload of await uploadsUnder(store)) {
        await store.client.send(
          new AbortMultipartUploadCommand({ Bucket: store.bucket, Key: upload.Key, UploadId: upload.UploadId }),
        );
      }
    }
  });
  return (options = {}) => {
    const store = s3StoreOn(swift!, options);
    made.push(store);
    return store;
  };
}
