import { createHash } from "node:crypto";
import { createWriteStream, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { cloudConfig } from "../../provider/openstack/config";
import { collect, openCloud, secretId } from "../../provider/openstack/index";
import { FakeCloud, cinderUrl, projectId, type SeenRequest } from "../support/fakeOpenStack";
import { useTempDir } from "../support/tempDir";

const config = cloudConfig({
  authUrl: "http://127.0.0.1:5000/v3",
  userName: "demo",
  password: "pw",
  projectName: "demo",
});
const created = "2026-11-26T12:00:00.000000";

function backup(id: string, extra: object = {}) {
  return {
    id,
    name: `b-${id}`,
    description: null,
    status: "available",
    fail_reason: null,
    volume_id: "v-1",
    snapshot_id: null,
    size: 1,
    object_count: 1,
    is_incremental: false,
    has_dependent_backups: false,
    container: `48/96/${id}`,
    availability_zone: "nova",
    data_timestamp: created,
    metadata: {},
    encryption_key_id: null,
    created_at: created,
    updated_at: created,
    links: [{ href: `${cinderUrl}/backups/${id}`, rel: "self" }],
    ...extra,
  };
}

function json(req: SeenRequest): Record<string, unknown> {
  return JSON.parse(req.body as string);
}

function setUp(microversion?: string) {
  const fake = new FakeCloud();
  return { fake, cloud: openCloud(config, fake.deps(), { cinderMicroversion: microversion }) };
}

describe("cinder", () => {
  test("lists every backup of the project across pages, following backups_links next", async () => {
    const { fake, cloud } = setUp();
    fake.on("GET", /\/backups\/detail$/, (req) => {
      const marker = req.url.searchParams.get("marker");
      if (!marker) {
        const next = `http://cinder.internal:8776/v3/${projectId}/backups/detail?limit=2&marker=b2`;
        return { json: { backups: [backup("b1"), backup("b2")], backups_links: [{ href: next, rel: "next" }] } };
      }
      if (marker === "b2") {
        const next = `${cinderUrl}/backups/detail?limit=2&marker=b4`;
        return { json: { backups: [backup("b3"), backup("b4")], backups_links: [{ href: next, rel: "next" }] } };
      }
      return { json: { backups: [backup("b5", { is_incremental: true, fail_reason: null })] } };
    });
    const all = await collect(cloud.cinder.listBackups({ limit: 2 }));
    expect(all.map((b) => b.id)).toEqual(["b1", "b2", "b3", "b4", "b5"]);
    const urls = fake.serviceRequests().map((req) => req.url.toString());
    expect(urls).toEqual([
      `${cinderUrl}/backups/detail?limit=2`,
      `${cinderUrl}/backups/detail?limit=2&marker=b2`, // the next link's host is not trusted, its query is
      `${cinderUrl}/backups/detail?limit=2&marker=b4`,
    ]);
    for (const req of fake.serviceRequests()) expect(req.headers.get("openstack-api-version")).toBe("volume 3.64");
  });

  test("creates a backup with all its options, and a volume from a backup with a type (>= 3.47)", async () => {
    const { fake, cloud } = setUp("3.40");
    fake.on("POST", /\/backups$/, () => ({ status: 202, json: { backup: { id: "b-9", name: "nightly", links: [] } } }));
    fake.on("POST", /\/volumes$/, (req) => ({
      status: 202,
      json: {
        volume: { id: "v-2", status: "creating", size: 1, bootable: "false", created_at: created, ...json(req) },
      },
    }));
    const options = { volumeId: "v-1", name: "nightly", description: "d", incremental: true, force: true };
    expect(await cloud.cinder.createBackup({ ...options, snapshotId: "s-1", metadata: { coffer: "1" } })).toEqual({
      id: "b-9",
    });
    const volume = await cloud.cinder.createVolume({ size: 1, backupId: "b-9", volumeType: "luks", name: "r" });
    expect(volume.id).toBe("v-2");
    const [backupReq, volumeReq] = fake.serviceRequests();
    expect(json(backupReq)).toEqual({
      backup: {
        volume_id: "v-1",
        name: "nightly",
        description: "d",
        incremental: true,
        force: true,
        snapshot_id: "s-1",
        metadata: { coffer: "1" },
      },
    });
    expect(backupReq.headers.get("openstack-api-version")).toBe("volume 3.43");
    expect(json(volumeReq)).toEqual({ volume: { size: 1, name: "r", volume_type: "luks", backup_id: "b-9" } });
    expect(volumeReq.headers.get("openstack-api-version")).toBe("volume 3.47");
  });

  test("volume actions, metadata, restore and the encryption of a type", async () => {
    const { fake, cloud } = setUp();
    fake.on("POST", /\/volumes\/v-1\/action$/, (req) =>
      "os-volume_upload_image" in json(req)
        ? {
            status: 202,
            json: {
              "os-volume_upload_image": {
                id: "v-1",
                image_id: "img-7",
                image_name: "snap",
                disk_format: "raw",
                container_format: "bare",
                status: "uploading",
                updated_at: created,
                size: 1,
                volume_type: null,
              },
            },
          }
        : { status: 202, raw: "" },
    );
    fake.on("POST", /\/volumes\/v-1\/metadata$/, (req) => ({
      json: { metadata: { a: "1", ...(json(req).metadata as object) } },
    }));
    fake.on("POST", /\/backups\/b-1\/restore$/, () => ({
      status: 202,
      json: { restore: { backup_id: "b-1", volume_id: "v-5", volume_name: "restore_backup_b-1" } },
    }));
    fake.on("GET", /\/types\/plain\/encryption$/, () => ({ json: {} }));
    fake.on("GET", /\/types\/luks\/encryption$/, () => ({
      json: {
        volume_type_id: "luks",
        control_location: "front-end",
        deleted: false,
        created_at: created,
        updated_at: null,
        encryption_id: "e-1",
        key_size: 256,
        provider: "luks",
        deleted_at: null,
        cipher: "aes-xts-plain64",
      },
    }));
    await cloud.cinder.setBootable("v-1", true);
    expect(await cloud.cinder.uploadToImage("v-1", { imageName: "snap", force: true })).toEqual({ imageId: "img-7" });
    expect(await cloud.cinder.setVolumeMetadata("v-1", { coffer: "yes" })).toEqual({ a: "1", coffer: "yes" });
    expect(await cloud.cinder.restoreBackup("b-1")).toEqual({ backupId: "b-1", volumeId: "v-5" });
    expect(await cloud.cinder.getVolumeTypeEncryption("plain")).toBeUndefined();
    expect(await cloud.cinder.getVolumeTypeEncryption("luks")).toMatchObject({ provider: "luks", key_size: 256 });
    const bodies = fake.serviceRequests().map((req) => req.body && json(req));
    expect(bodies.slice(0, 4)).toEqual([
      { "os-set_bootable": { bootable: true } },
      {
        "os-volume_upload_image": { image_name: "snap", disk_format: "raw", container_format: "bare", force: true },
      },
      { metadata: { coffer: "yes" } },
      { restore: {} },
    ]);
  });
});

describe("glance", () => {
  const dir = useTempDir("coffer-glance-");
  const data = Buffer.from("coffer image bytes \u0000\u0001\u0002".repeat(1000));
  const image = (extra: object = {}) => ({
    id: "img-1",
    name: "disk",
    status: "active",
    visibility: "private",
    protected: false,
    disk_format: "raw",
    container_format: "bare",
    size: data.length,
    checksum: createHash("md5").update(data).digest("hex"),
    os_hash_algo: "sha512",
    os_hash_value: createHash("sha512").update(data).digest("hex"),
    owner: projectId,
    tags: [],
    created_at: "2026-11-26T12:00:00Z",
    updated_at: "2026-11-26T12:00:00Z",
    self: "/v2/images/img-1",
    file: "/v2/images/img-1/file",
    schema: "/v2/schemas/image",
    stores: "fs",
    coffer_set: "gold",
    ...extra,
  });

  test("lists across pages with `next`, and splits user properties from Glance's fields", async () => {
    const { fake, cloud } = setUp();
    fake.on("GET", /^\/v2\/images$/, (req) =>
      req.url.searchParams.get("marker") === "img-1"
        ? { json: { images: [image({ id: "img-2" })], first: "/v2/images", schema: "/v2/schemas/images" } }
        : { json: { images: [image()], next: "/v2/images?name=disk&limit=1&marker=img-1", first: "/v2/images" } },
    );
    const all = await collect(cloud.glance.listImages({ name: "disk" }, { limit: 1 }));
    expect(all.map((i) => i.id)).toEqual(["img-1", "img-2"]);
    expect(all[0].properties).toEqual({ stores: "fs", coffer_set: "gold" });
    expect(fake.serviceRequests()[1].url.search).toBe("?name=disk&limit=1&marker=img-1");
  });

  test("uploads a file as octet-stream and downloads it, checking sha512 and md5 on the way", async () => {
    const { fake, cloud } = setUp();
    const source = path.join(dir(), "in.raw");
    writeFileSync(source, data);
    let stored = Buffer.alloc(0);
    fake.on("PUT", /\/v2\/images\/img-1\/file$/, (req) => {
      stored = Buffer.from(req.body as Uint8Array);
      return { status: 204 };
    });
    fake.on("GET", /\/v2\/images\/img-1$/, () => ({ json: image() }));
    fake.on("GET", /\/v2\/images\/img-1\/file$/, () => ({
      raw: stored,
      headers: { "content-type": "application/octet-stream" },
    }));
    await cloud.glance.uploadImageData("img-1", source);
    const put = fake.serviceRequests()[0];
    expect(put.headers.get("content-type")).toBe("application/octet-stream");
    expect(stored.equals(data)).toBe(true);
    const target = path.join(dir(), "out.raw");
    const result = await cloud.glance.downloadImageData("img-1", createWriteStream(target));
    expect(result).toEqual({
      sizeBytes: data.length,
      hashAlgo: "sha512",
      hashValue: image().os_hash_value,
      md5: image().checksum,
    });
    expect(readFileSync(target).equals(data)).toBe(true);
    fake.on("GET", /\/v2\/images\/img-1\/file$/, () => ({ raw: Buffer.concat([stored, Buffer.from("x")]) }));
    await expect(cloud.glance.downloadImageData("img-1", createWriteStream(target))).rejects.toMatchObject({
      code: "VERIFY_FAILED",
    });
  });

  test("sets and removes properties with a JSON patch of add/replace/remove", async () => {
    const { fake, cloud } = setUp();
    fake.on("PATCH", /\/v2\/images\/img-1$/, () => ({ json: image({ coffer_set: "silver", coffer_point: "p1" }) }));
    fake.on("GET", /\/v2\/images\/img-1$/, () => ({ json: image() }));
    const current = await cloud.glance.getImage("img-1");
    const updated = await cloud.glance.setImageProperties(current, {
      coffer_set: "silver",
      coffer_point: "p1",
      stores: null,
      absent: null,
    });
    expect(updated.properties.coffer_point).toBe("p1");
    const patch = fake.serviceRequests()[1];
    expect(patch.headers.get("content-type")).toBe("application/openstack-images-v2.1-json-patch");
    expect(json(patch)).toEqual([
      { op: "replace", path: "/coffer_set", value: "silver" },
      { op: "add", path: "/coffer_point", value: "p1" },
      { op: "remove", path: "/stores" },
    ]);
  });
});

describe("barbican", () => {
  const secretRef = "http://127.0.0.1:9311/v1/secrets/7a1b2c3d-0000-4000-8000-000000000001";
  const metadata = (id: string) => ({
    secret_ref: `http://127.0.0.1:9311/v1/secrets/${id}`,
    name: "key",
    status: "ACTIVE",
    secret_type: "symmetric",
    algorithm: "aes",
    bit_length: 256,
    mode: null,
    expiration: null,
    content_types: { default: "application/octet-stream" },
    created: "2026-11-26T12:00:00",
    updated: "2026-11-26T12:00:00",
    creator_id: "u",
  });

  test("a filtered listing keeps its filter on the next pages (Barbican's next link drops it)", async () => {
    const { fake, cloud } = setUp();
    const names: (string | null)[] = [];
    fake.on("GET", /\/v1\/secrets$/, (req) => {
      names.push(req.url.searchParams.get("name"));
      return req.url.searchParams.get("offset") === "1"
        ? { json: { secrets: [metadata("s2")], total: 2 } }
        : { json: { secrets: [metadata("s1")], total: 2, next: "http://127.0.0.1:9311/v1/secrets?limit=1&offset=1" } };
    });
    const listed = await collect(cloud.barbican.listSecrets({ name: "k" }, { limit: 1 }));
    expect(listed.map((s) => s.id)).toEqual(["s1", "s2"]);
    expect(names).toEqual(["k", "k"]);
  });

  test("reads metadata and the payload bytes, stores base64, and lists across offset pages", async () => {
    const { fake, cloud } = setUp();
    const payload = Buffer.from([0, 1, 2, 255, 0, 42]);
    fake.on("GET", /\/v1\/secrets\/[^/]+$/, (req) => ({ json: metadata(req.url.pathname.split("/").pop() as string) }));
    fake.on("GET", /\/v1\/secrets\/[^/]+\/payload$/, () => ({ raw: payload }));
    fake.on("POST", /\/v1\/secrets$/, () => ({ status: 201, json: { secret_ref: secretRef } }));
    fake.on("GET", /\/v1\/secrets$/, (req) =>
      req.url.searchParams.get("offset") === "1"
        ? { json: { secrets: [metadata("s2")], total: 2, previous: "http://127.0.0.1:9311/v1/secrets?limit=1" } }
        : { json: { secrets: [metadata("s1")], total: 2, next: "http://127.0.0.1:9311/v1/secrets?limit=1&offset=1" } },
    );
    expect(await cloud.barbican.getSecret(secretRef)).toMatchObject({ id: secretId(secretRef), bit_length: 256 });
    expect((await cloud.barbican.getSecretPayload(secretRef)).equals(payload)).toBe(true);
    expect(await cloud.barbican.storeSecret({ name: "k", payload })).toEqual({
      ref: secretRef,
      id: secretId(secretRef),
    });
    expect((await collect(cloud.barbican.listSecrets({}, { limit: 1 }))).map((s) => s.id)).toEqual(["s1", "s2"]);
    const [, get, store] = fake.serviceRequests();
    expect(get.headers.get("accept")).toBe("application/octet-stream");
    expect(json(store)).toEqual({
      name: "k",
      payload: payload.toString("base64"),
      payload_content_type: "application/octet-stream",
      payload_content_encoding: "base64",
      secret_type: "opaque",
    });
  });

  test("a stored payload is redacted from the error when the server echoes it", async () => {
    const { fake, cloud } = setUp();
    const payload = Buffer.from("a payload that must never be shown");
    const echoed = payload.toString("base64");
    fake.on("POST", /\/v1\/secrets$/, () => ({ status: 400, json: { code: 400, title: "Bad", description: echoed } }));
    const error = await cloud.barbican.storeSecret({ payload }).catch((e: Error) => e);
    expect((error as Error).message).toContain("barbican secret (unnamed): HTTP 400");
    expect((error as Error).message).not.toContain(echoed);
  });
});
