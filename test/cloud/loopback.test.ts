import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { open } from "node:fs/promises";
import * as path from "node:path";
import { cloudMissingNote, LoopbackCloud, LoopbackCloudUser, loopbackCloud } from "../support/loopbackCloud";

// Smoke test of the fixture itself (tools/openstack/osloop.sh), with Node's fetch only.
jest.setTimeout(10 * 60_000);

const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const GIB = 1024 ** 3;
const unique = `smoke-${randomUUID().slice(0, 8)}`; // the databases persist between ups

interface Session {
  token: string;
  projectId: string;
  endpoints: Record<string, string>; // service type -> public URL
}

async function login(c: LoopbackCloud, user: LoopbackCloudUser): Promise<Session> {
  const response = await fetch(`${c.authUrl}/auth/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      auth: {
        identity: {
          methods: ["password"],
          password: { user: { name: user.username, password: user.password, domain: { name: user.userDomainName } } },
        },
        scope: { project: { name: user.projectName, domain: { name: user.projectDomainName } } },
      },
    }),
  });
  expect(response.status).toBe(201);
  const body = (await response.json()) as {
    token: {
      project: { id: string; name: string };
      catalog: { type: string; endpoints: { interface: string; region: string; url: string }[] }[];
    };
  };
  const endpoints: Record<string, string> = {};
  for (const service of body.token.catalog) {
    const endpoint = service.endpoints.find((e) => e.interface === "public" && e.region === c.region);
    if (endpoint) endpoints[service.type] = endpoint.url.replace(/\/$/, "");
  }
  expect(body.token.project.name).toBe(user.projectName);
  return { token: response.headers.get("x-subject-token")!, projectId: body.token.project.id, endpoints };
}

async function call(s: Session, method: string, url: string, body?: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(url, {
    method,
    headers: {
      "x-auth-token": s.token,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status >= 300) throw new Error(`${method} ${url}: HTTP ${response.status}: ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function waitForStatus(what: string, read: () => Promise<{ status: string }>, wanted: string, limitMs = 180_000) {
  const started = Date.now();
  for (;;) {
    const { status } = await read();
    if (status === wanted) return;
    if (status.startsWith("error") || Date.now() - started > limitMs) {
      throw new Error(`${what} is ${status}, not ${wanted} (after ${Math.round((Date.now() - started) / 1000)} s)`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function waitUntilGone(url: string, s: Session, limitMs = 180_000) {
  const started = Date.now();
  while ((await fetch(url, { headers: { "x-auth-token": s.token } })).status !== 404) {
    if (Date.now() - started > limitMs) throw new Error(`${url} still exists after ${limitMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

describeCloud(`the loopback OpenStack cloud${cloud ? "" : ` (${cloudMissingNote})`}`, () => {
  let demo: Session;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    demo = await login(cloud!, cloud!.demo);
  });

  afterAll(async () => {
    const problems: string[] = [];
    for (const cleanup of cleanups.reverse()) await cleanup().catch((e: Error) => problems.push(e.message));
    expect(problems).toEqual([]);
  });

  it("issues demo a token scoped to demo, with Cinder, Glance and Barbican in the catalog", () => {
    expect(demo.token).toMatch(/\S{20,}/);
    expect(Object.keys(demo.endpoints)).toEqual(expect.arrayContaining(["volumev3", "image", "key-manager"]));
    expect(demo.endpoints.volumev3).toBe(`http://127.0.0.1:8776/v3/${demo.projectId}`);
  });

  it("has the volume types of cloud.json: a default one and an encrypted (LUKS) one", async () => {
    const admin = await login(cloud!, cloud!.admin);
    const cinder = admin.endpoints.volumev3;
    expect((await call(admin, "GET", `${cinder}/types/default`)).volume_type.name).toBe(cloud!.volumeTypes.default);
    const { volume_types: types } = await call(admin, "GET", `${cinder}/types`);
    const encrypted = types.find((t: { name: string }) => t.name === cloud!.volumeTypes.encrypted);
    expect(encrypted.extra_specs).toEqual({ volume_backend_name: "loopfile" });
    const encryption = await call(admin, "GET", `${cinder}/types/${encrypted.id}/encryption`); // not wrapped
    expect(encryption).toMatchObject({
      provider: "luks",
      cipher: "aes-xts-plain64",
      key_size: 256,
      control_location: "front-end",
    });
  });

  it("backs up a volume's real bytes and restores them into a new volume", async () => {
    const cinder = demo.endpoints.volumev3;
    const createVolume = async (name: string, extra: object = {}, headers: Record<string, string> = {}) => {
      const { volume } = await call(
        demo,
        "POST",
        `${cinder}/volumes`,
        { volume: { size: 1, name, ...extra } },
        headers,
      );
      const url = `${cinder}/volumes/${volume.id}`;
      cleanups.push(async () => {
        await call(demo, "DELETE", url);
        await waitUntilGone(url, demo);
      });
      await waitForStatus(`volume ${name}`, async () => (await call(demo, "GET", url)).volume, "available");
      return volume.id as string;
    };

    const sourceId = await createVolume(`${unique}-source`);
    const sourceFile = path.join(cloud!.volumesDir, `volume-${sourceId}`);
    const marks = [0, GIB / 2 + 7, GIB - 4096].map((offset) => ({ offset, bytes: randomBytes(4096) }));
    const writer = await open(sourceFile, "r+");
    for (const { offset, bytes } of marks) await writer.write(bytes, 0, bytes.length, offset);
    await writer.close();

    const { backup } = await call(demo, "POST", `${cinder}/backups`, {
      backup: { volume_id: sourceId, name: `${unique}-full` },
    });
    const backupUrl = `${cinder}/backups/${backup.id}`;
    cleanups.push(async () => {
      await call(demo, "DELETE", backupUrl);
      await waitUntilGone(backupUrl, demo);
    });
    await waitForStatus("the backup", async () => (await call(demo, "GET", backupUrl)).backup, "available");
    const { backup: shown } = await call(demo, "GET", backupUrl);
    expect(existsSync(path.join(cloud!.backupsDir, shown.container))).toBe(true);

    const restoredId = await createVolume(
      `${unique}-restored`,
      { backup_id: backup.id },
      { "OpenStack-API-Version": "volume 3.47" },
    );
    const restoredFile = path.join(cloud!.volumesDir, `volume-${restoredId}`);
    const reader = await open(restoredFile, "r");
    for (const { offset, bytes } of marks) {
      const read = Buffer.alloc(bytes.length);
      await reader.read(read, 0, read.length, offset);
      expect(read.equals(bytes)).toBe(true);
    }
    await reader.close();
    expect(await sha256(restoredFile)).toBe(await sha256(sourceFile));
  });

  it("stores a secret in Barbican and gives its bytes back", async () => {
    const barbican = demo.endpoints["key-manager"];
    const payload = Buffer.concat([Buffer.from([0, 255, 0]), randomBytes(29)]);
    const { secret_ref: secretRef } = await call(demo, "POST", `${barbican}/v1/secrets`, {
      name: `${unique}-secret`,
      payload: payload.toString("base64"),
      payload_content_type: "application/octet-stream",
      payload_content_encoding: "base64",
      secret_type: "opaque",
    });
    cleanups.push(() => call(demo, "DELETE", secretRef));
    const response = await fetch(`${secretRef}/payload`, {
      headers: { "x-auth-token": demo.token, accept: "application/octet-stream" },
    });
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer()).equals(payload)).toBe(true);
  });

  it("uploads an image to Glance and downloads the same bytes", async () => {
    const glance = demo.endpoints.image;
    const image = await call(demo, "POST", `${glance}/v2/images`, {
      name: `${unique}-image`,
      disk_format: "raw",
      container_format: "bare",
    });
    cleanups.push(() => call(demo, "DELETE", `${glance}/v2/images/${image.id}`));
    const bytes = randomBytes(256 * 1024 + 3);
    const upload = await fetch(`${glance}/v2/images/${image.id}/file`, {
      method: "PUT",
      headers: { "x-auth-token": demo.token, "content-type": "application/octet-stream" },
      body: bytes,
    });
    expect(upload.status).toBe(204);
    expect((await call(demo, "GET", `${glance}/v2/images/${image.id}`)).status).toBe("active");
    const download = await fetch(`${glance}/v2/images/${image.id}/file`, { headers: { "x-auth-token": demo.token } });
    expect(download.status).toBe(200);
    expect(Buffer.from(await download.arrayBuffer()).equals(bytes)).toBe(true);
  });
});
