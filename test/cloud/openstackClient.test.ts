import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rm, writeFile } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { Writable } from "node:stream";
import { z } from "zod";
import { isCofferError, type CofferErrorCode } from "../../provider/common/errors";
import {
  CloudError,
  cloudConfig,
  collect,
  openCloud,
  waitForBackup,
  waitForBackupDeleted,
  waitForVolume,
  waitForVolumeDeleted,
  type Cloud,
  type CloudOptions,
  type CloudSettings,
  type RequestEvent,
} from "../../provider/openstack";
import { cloudMissingNote, type LoopbackCloud, type LoopbackCloudUser, loopbackCloud } from "../support/loopbackCloud";
import { useTempDir } from "../support/tempDir";

// Coffer's OpenStack client against the real loopback cloud: every API error path with its message.
jest.setTimeout(15 * 60_000);

const cloud = loopbackCloud();
const describeCloud = cloud ? describe : describe.skip;
const prefix = `clienttest-${randomUUID().slice(0, 8)}`; // names everything this file creates
const GIB = 1024 ** 3;
const waits = { timeoutMs: 180_000, deps: { now: Date.now, sleep: realSleep } };
const requestIdPattern = /^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const missingId = "00000000-0000-4000-8000-00000000c0ff";

function realSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function settingsOf(user: LoopbackCloudUser): CloudSettings {
  return {
    authUrl: cloud!.authUrl,
    region: cloud!.region,
    userName: user.username,
    password: user.password,
    projectName: user.projectName,
    userDomainName: user.userDomainName,
    projectDomainName: user.projectDomainName,
  };
}

/** A client as Coffer's provider opens one, with every HTTP attempt recorded. */
function connect(settings: CloudSettings, options: CloudOptions = {}): { client: Cloud; requests: RequestEvent[] } {
  const requests: RequestEvent[] = [];
  const client = openCloud(cloudConfig(settings), { onRequest: (event) => requests.push(event) }, options);
  return { client, requests };
}

async function rejectionOf(promise: Promise<unknown>): Promise<CloudError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(outcome).toBeInstanceOf(CloudError);
  return outcome as CloudError;
}

/** An HTTP error names the service, the resource, the status, the server's message and the request id. */
function expectHttpError(
  error: CloudError,
  expected: { code: CofferErrorCode; service: string; resource: string; status: number; serverMessage: RegExp },
): void {
  expect(isCofferError(error)).toBe(true);
  expect(error.code).toBe(expected.code);
  expect(error).toMatchObject({ service: expected.service, resource: expected.resource, status: expected.status });
  expect(error.requestId).toMatch(requestIdPattern);
  expect(error.message).toContain(`${expected.service} ${expected.resource}: HTTP ${expected.status}`);
  expect(error.message).toMatch(expected.serverMessage);
  expect(error.message).toContain(`(request id ${error.requestId})`);
}

/** Everything an error carries, as a log or a serialized state would see it. */
function serialized(error: unknown): string {
  const parts: string[] = [];
  for (let current = error; current instanceof Error; current = current.cause) {
    parts.push(current.message, String(current.stack), JSON.stringify(current, Object.getOwnPropertyNames(current)));
  }
  return parts.join("\n");
}

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function writeMarks(file: string, marks: readonly { offset: number; bytes: Buffer }[]): Promise<void> {
  const handle = await open(file, "r+");
  try {
    for (const { offset, bytes } of marks) await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

function marksAt(...offsets: number[]) {
  return offsets.map((offset) => ({ offset, bytes: randomBytes(4096) }));
}

/** Keystone v3 and Cinder's admin API, through an admin client's token. */
class AdminApi {
  readonly client: Cloud;

  constructor(c: LoopbackCloud) {
    this.client = connect(settingsOf(c.admin)).client;
  }

  async keystone(method: string, route: string, json?: unknown, headers: Record<string, string> = {}) {
    const token = await this.client.session.token();
    const response = await fetch(`${cloud!.authUrl}${route}`, {
      method,
      headers: {
        "X-Auth-Token": token.value,
        ...(json === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`keystone ${method} ${route}: HTTP ${response.status}: ${text}`);
    return (text ? JSON.parse(text) : {}) as Record<string, any>;
  }

  /** Sets some of the project's Cinder quotas; `undefined` puts them back to the defaults. */
  async setVolumeQuota(projectId: string, quota: Record<string, number> | undefined): Promise<void> {
    const path = `/os-quota-sets/${projectId}`;
    await this.cinder(quota ? "PUT" : "DELETE", path, `quota of project ${projectId}`, quota && { quota_set: quota });
  }

  /** Names starting with `prefix`, of every project's volumes, backups and images, and of projects and users. */
  async leftovers(): Promise<string[]> {
    const named = (items: { name?: string | null }[]) =>
      items.map((item) => item.name ?? "").filter((name) => name.startsWith(prefix));
    const volumes = (await this.cinder("GET", "/volumes?all_tenants=1", "volumes")).volumes;
    const backups = (await this.cinder("GET", "/backups?all_tenants=1", "backups")).backups;
    const images = await collect(this.client.glance.listImages());
    const projects = (await this.keystone("GET", "/projects")).projects;
    const users = (await this.keystone("GET", "/users")).users;
    return [volumes, backups, images, projects, users].flatMap(named);
  }

  private async cinder(method: "GET" | "PUT" | "DELETE", path: string, resource: string, json?: unknown) {
    const call = { service: "cinder" as const, method, path, resource, json };
    return (await this.client.session.request(call, z.record(z.string(), z.any()))).body;
  }
}

describeCloud(`Coffer's OpenStack client against the loopback cloud${cloud ? "" : ` (${cloudMissingNote})`}`, () => {
  let admin: AdminApi;
  /** demo, as cloud.json gives it: what Coffer's provider uses. */
  let demo: Cloud;
  /** A temporary project and user, for quotas and application credentials (demo's are shared). */
  let temp: { projectId: string; userId: string; settings: CloudSettings };
  const cleanups: { what: string; run: () => Promise<unknown> }[] = [];
  const cleanUp = (what: string, run: () => Promise<unknown>) => cleanups.push({ what, run });

  const createVolume = async (client: Cloud, name: string, extra: { backupId?: string; volumeType?: string } = {}) => {
    const volume = await client.cinder.createVolume({ size: 1, name: `${prefix}-${name}`, ...extra });
    cleanUp(`volume ${volume.id}`, async () => {
      await client.cinder.deleteVolume(volume.id);
      await waitForVolumeDeleted(client.cinder, volume.id, waits);
    });
    await waitForVolume(client.cinder, volume.id, waits);
    return volume.id;
  };
  const startBackup = async (client: Cloud, volumeId: string, name: string, incremental = false) => {
    const { id } = await client.cinder.createBackup({ volumeId, name: `${prefix}-${name}`, incremental });
    cleanUp(`backup ${id}`, async () => {
      await waitForBackup(client.cinder, id, waits).catch(() => undefined); // "creating" refuses deletion
      await client.cinder.deleteBackup(id);
      await waitForBackupDeleted(client.cinder, id, waits);
    });
    return id;
  };

  beforeAll(async () => {
    admin = new AdminApi(cloud!);
    demo = connect(settingsOf(cloud!.demo)).client;
    const { project } = await admin.keystone("POST", "/projects", {
      project: { name: `${prefix}-project`, domain_id: "default" },
    });
    cleanUp(`project ${project.id}`, () => admin.keystone("DELETE", `/projects/${project.id}`));
    const password = randomBytes(18).toString("base64url");
    const { user } = await admin.keystone("POST", "/users", {
      user: { name: `${prefix}-user`, password, domain_id: "default", default_project_id: project.id },
    });
    cleanUp(`user ${user.id}`, () => admin.keystone("DELETE", `/users/${user.id}`));
    const { roles } = await admin.keystone("GET", "/roles?name=member");
    await admin.keystone("PUT", `/projects/${project.id}/users/${user.id}/roles/${roles[0].id}`);
    temp = {
      projectId: project.id,
      userId: user.id,
      settings: {
        ...settingsOf(cloud!.demo),
        userName: user.name,
        password,
        projectName: project.name,
      },
    };
  });

  afterAll(async () => {
    const problems: string[] = [];
    for (const { what, run } of cleanups.reverse()) {
      await run().catch((error: Error) => problems.push(`${what}: ${error.message}`));
    }
    expect(problems).toEqual([]);
    expect(await admin.leftovers()).toEqual([]);
    const secrets = await collect(demo.barbican.listSecrets()); // admin does not see demo's
    expect(secrets.filter((secret) => secret.name?.startsWith(prefix))).toEqual([]);
  });

  describe("keystone", () => {
    it("authenticates with a password once and reuses the token", async () => {
      const { client, requests } = connect(settingsOf(cloud!.demo));
      const types = await client.cinder.listVolumeTypes();
      await client.cinder.getVolumeType(types.find((type) => type.name === cloud!.volumeTypes.default)!.id);
      expect(requests.filter((event) => event.service === "keystone")).toHaveLength(1);
      expect(requests.filter((event) => event.service === "cinder").map((event) => event.status)).toEqual([200, 200]);
    });

    it("a revoked token: the service answers 401, the client authenticates again and repeats the call", async () => {
      const lines: string[] = [];
      const requests: RequestEvent[] = [];
      const deps = {
        onRequest: (event: RequestEvent) => requests.push(event),
        log: (line: string) => lines.push(line),
      };
      const client = openCloud(cloudConfig(settingsOf(cloud!.demo)), deps);
      const revoked = (await client.session.token()).value; // not yet seen by Cinder, so not in its token cache
      await admin.keystone("DELETE", "/auth/tokens", undefined, { "X-Subject-Token": revoked });
      expect((await client.cinder.listVolumeTypes()).length).toBeGreaterThan(0);
      expect(requests.map((event) => `${event.service} ${event.status}`)).toEqual([
        "keystone 201",
        "cinder 401",
        "keystone 201",
        "cinder 200",
      ]);
      expect(lines).toEqual(["cinder volume types: HTTP 401 with a token; authenticating again"]);
      expect((await client.session.token()).value).not.toBe(revoked);
    });

    it("authenticates with an application credential", async () => {
      const { client: user } = connect(temp.settings);
      const token = await user.session.token();
      const response = await fetch(`${cloud!.authUrl}/users/${temp.userId}/application_credentials`, {
        method: "POST",
        headers: { "X-Auth-Token": token.value, "Content-Type": "application/json" },
        body: JSON.stringify({ application_credential: { name: `${prefix}-appcred` } }),
      });
      expect(response.status).toBe(201);
      const { application_credential: credential } = (await response.json()) as {
        application_credential: { id: string; secret: string };
      };
      const credentialPath = `/users/${temp.userId}/application_credentials/${credential.id}`;
      let deleted = false;
      cleanUp(`application credential ${credential.id}`, async () => {
        if (!deleted) await admin.keystone("DELETE", credentialPath);
      });
      const settings = {
        authUrl: cloud!.authUrl,
        region: cloud!.region,
        applicationCredentialId: credential.id,
        applicationCredentialSecret: credential.secret,
      };

      const { client, requests } = connect(settings);
      expect(await client.session.projectId()).toBe(temp.projectId);
      expect((await client.cinder.listVolumeTypes()).map((type) => type.name)).toContain(cloud!.volumeTypes.default);
      expect(requests.map((event) => `${event.service} ${event.status}`)).toEqual(["keystone 201", "cinder 200"]);

      await admin.keystone("DELETE", credentialPath);
      deleted = true;
      const error = await rejectionOf(connect(settings).client.cinder.listVolumeTypes());
      expectHttpError(error, {
        code: "CLOUD_AUTH_FAILED",
        service: "keystone",
        resource: `token for application credential ${credential.id}`,
        status: 404, // Keystone's answer for a deleted credential; still an authentication failure
        serverMessage: new RegExp(`: Could not find Application Credential: ${credential.id}\\.`),
      });
      expect(error.message).toContain("Check the credentials");
      expect(serialized(error)).not.toContain(credential.secret);
    });

    it("401: a wrong password, named without the password anywhere in the error", async () => {
      const wrong = `wrong-${randomBytes(12).toString("hex")}`;
      const { client, requests } = connect({ ...settingsOf(cloud!.demo), password: wrong });
      const error = await rejectionOf(client.cinder.listVolumeTypes());
      expectHttpError(error, {
        code: "CLOUD_AUTH_FAILED",
        service: "keystone",
        resource: `token for user ${cloud!.demo.username} in project ${cloud!.demo.projectName}`,
        status: 401,
        serverMessage: /: The request you have made requires authentication\./,
      });
      expect(error.message).toContain("Check the credentials");
      expect(serialized(error)).not.toContain(wrong);
      expect(serialized(error)).not.toContain(cloud!.demo.password);
      expect(requests).toHaveLength(1); // a 401 is not retried
    });

    it("CLOUD_UNAVAILABLE: no Keystone on the port, after the configured retries", async () => {
      const port = await closedPort();
      const settings = { ...settingsOf(cloud!.demo), authUrl: `http://127.0.0.1:${port}/v3`, maxRetries: "2" };
      const { client, requests } = connect(settings);
      const error = await rejectionOf(client.cinder.getVolume(missingId));
      expect(error.code).toBe("CLOUD_UNAVAILABLE");
      expect(error.message).toMatch(
        new RegExp(
          `^keystone token for user demo in project demo: no connection to http://127.0.0.1:${port} ` +
            `\\(connect ECONNREFUSED 127\\.0\\.0\\.1:${port}\\) on POST /v3/auth/tokens\\. Check that the service runs`,
        ),
      );
      expect(requests.map((event) => [event.attempt, event.status])).toEqual([
        [1, undefined],
        [2, undefined],
        [3, undefined],
      ]);
    });

    it("CLOUD_TIMEOUT: a Keystone that accepts and never answers", async () => {
      const server = http.createServer(() => undefined); // never responds
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const port = (server.address() as AddressInfo).port;
      try {
        const settings = { ...settingsOf(cloud!.demo), authUrl: `http://127.0.0.1:${port}/v3` };
        const { client, requests } = connect(settings, { timeoutMs: 300 });
        const started = Date.now();
        const error = await rejectionOf(client.glance.getImage(missingId));
        expect(error.code).toBe("CLOUD_TIMEOUT");
        expect(error.message).toBe(
          `keystone token for user demo in project demo: no response within 0.3 s on POST /v3/auth/tokens ` +
            `from http://127.0.0.1:${port}. The service may be overloaded; retry later.`,
        );
        expect(requests).toHaveLength(1); // a timeout is not retried: the server may still be working on it
        expect(Date.now() - started).toBeLessThan(5_000);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });

  describe("cinder", () => {
    it("403: demo may not create a volume type", async () => {
      const name = `${prefix}-type`;
      const error = await rejectionOf(demo.cinder.createVolumeType({ name }));
      expectHttpError(error, {
        code: "CLOUD_FORBIDDEN",
        service: "cinder",
        resource: `volume type ${name}`,
        status: 403,
        serverMessage: /: Policy doesn't allow volume_extension:type_create to be performed\./,
      });
    });

    it("404: a volume and a backup that do not exist", async () => {
      expectHttpError(await rejectionOf(demo.cinder.getVolume(missingId)), {
        code: "CLOUD_NOT_FOUND",
        service: "cinder",
        resource: `volume ${missingId}`,
        status: 404,
        serverMessage: new RegExp(`: Volume ${missingId} could not be found\\.`),
      });
      expectHttpError(await rejectionOf(demo.cinder.getBackup(missingId)), {
        code: "CLOUD_NOT_FOUND",
        service: "cinder",
        resource: `backup ${missingId}`,
        status: 404,
        serverMessage: new RegExp(`: Backup ${missingId} could not be found\\.`),
      });
    });

    it("406: a microversion the server does not have", async () => {
      const { client } = connect(settingsOf(cloud!.demo), { cinderMicroversion: "3.999" });
      const error = await rejectionOf(client.cinder.getVolume(missingId));
      expectHttpError(error, {
        code: "CLOUD_BAD_REQUEST",
        service: "cinder",
        resource: `volume ${missingId}`,
        status: 406,
        serverMessage: /: Version 3\.999 is not supported by the API\. Minimum is 3\.0 and maximum is 3\.\d+\./,
      });
      expect(error.message).toContain("does not support the API microversion");
    });

    it("413: a volume over the project's gigabytes quota", async () => {
      await admin.setVolumeQuota(temp.projectId, { gigabytes: 5 });
      cleanUp(`quota of project ${temp.projectId}`, () => admin.setVolumeQuota(temp.projectId, undefined));
      const { client } = connect(temp.settings);
      const name = `${prefix}-too-big`;
      const error = await rejectionOf(client.cinder.createVolume({ size: 6, name }));
      expectHttpError(error, {
        code: "CLOUD_QUOTA",
        service: "cinder",
        resource: `volume ${name}`,
        status: 413,
        serverMessage: new RegExp(
          ": VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota\\. " +
            "Requested 6G, quota is 5G and 0G has been consumed\\.",
        ),
      });
    });

    it("a volume the scheduler can't place fails with Cinder's own reason (its user message)", async () => {
      const type = await admin.client.cinder.createVolumeType({
        name: `${prefix}-nowhere`,
        extraSpecs: { volume_backend_name: "no-such-backend" },
      });
      cleanUp(`volume type ${type.id}`, () => admin.client.cinder.deleteVolumeType(type.id));
      const volume = await demo.cinder.createVolume({ size: 1, name: `${prefix}-unplaceable`, volumeType: type.id });
      cleanUp(`volume ${volume.id}`, async () => {
        await demo.cinder.deleteVolume(volume.id);
        await waitForVolumeDeleted(demo.cinder, volume.id, waits);
      });
      const error = await rejectionOf(waitForVolume(demo.cinder, volume.id, waits));
      expect(error).toMatchObject({ code: "CLOUD_RESOURCE_FAILED" });
      expect(error.message).toMatch(
        new RegExp(`^cinder volume ${volume.id} went to status "error": schedule allocate volume:Could not find any`),
      );
    });

    it("lists volumes page by page", async () => {
      const { client, requests } = connect(temp.settings);
      const ids = [];
      for (const name of ["page-a", "page-b", "page-c"]) ids.push(await createVolume(client, name));
      requests.length = 0;
      const names = ["page-a", "page-b", "page-c"].map((name) => `${prefix}-${name}`);
      expect(await admin.leftovers()).toEqual(expect.arrayContaining(names)); // the final check sees them
      const listed = await collect(client.cinder.listVolumes({ limit: 1 }));
      expect(listed.map((volume) => volume.id).sort()).toEqual([...ids].sort());
      const pages = requests.filter((event) => event.url.endsWith("/volumes/detail"));
      expect(pages.length).toBeGreaterThanOrEqual(3);
      expect(pages.every((event) => event.status === 200)).toBe(true);
    });

    describe("backups", () => {
      let sourceId: string;
      let sourceFile: string;
      let fullId: string;
      let incrementalId: string;

      beforeAll(async () => {
        sourceId = await createVolume(demo, "source");
        sourceFile = path.join(cloud!.volumesDir, `volume-${sourceId}`);
      });

      it("waits for a full and an incremental backup, and restores the bytes into a new volume", async () => {
        await writeMarks(sourceFile, marksAt(0, GIB / 2 + 7, GIB - 4096));
        fullId = await startBackup(demo, sourceId, "full");
        const seen: string[] = [];
        const full = await waitForBackup(demo.cinder, fullId, {
          ...waits,
          onProgress: ({ status }) => seen.push(status),
        });
        expect(full).toMatchObject({ id: fullId, status: "available", is_incremental: false });
        expect(seen.at(-1)).toBe("available");
        await waitForVolume(demo.cinder, sourceId, waits);

        await writeMarks(sourceFile, marksAt(4096 * 3, GIB / 4));
        incrementalId = await startBackup(demo, sourceId, "incremental", true);
        const incremental = await waitForBackup(demo.cinder, incrementalId, waits);
        expect(incremental).toMatchObject({ status: "available", is_incremental: true });
        await waitForVolume(demo.cinder, sourceId, waits);

        const restoredId = await createVolume(demo, "restored", {
          backupId: incrementalId,
          volumeType: cloud!.volumeTypes.default,
        });
        const restored = await demo.cinder.getVolume(restoredId);
        expect(restored.volume_type).toBe(cloud!.volumeTypes.default);
        expect(await sha256(path.join(cloud!.volumesDir, `volume-${restoredId}`))).toBe(await sha256(sourceFile));
      });

      it("400: deleting a full backup that an incremental depends on", async () => {
        expect(fullId && incrementalId).toBeTruthy();
        const error = await rejectionOf(demo.cinder.deleteBackup(fullId));
        expectHttpError(error, {
          code: "CLOUD_BAD_REQUEST",
          service: "cinder",
          resource: `backup ${fullId}`,
          status: 400,
          serverMessage: /: Invalid backup: Incremental backups exist for this backup\./,
        });
        expect((await demo.cinder.getBackup(fullId)).status).toBe("available");
      });

      it("CLOUD_TIMEOUT: a wait shorter than the backup names the status it is stuck in", async () => {
        const id = await startBackup(demo, sourceId, "slow");
        const error = await rejectionOf(waitForBackup(demo.cinder, id, { ...waits, timeoutMs: 200 }));
        expect(error.code).toBe("CLOUD_TIMEOUT");
        expect(error.message).toMatch(
          new RegExp(`^cinder backup ${id} is still "creating" after 0 s \\(waiting for "available"\\)\\. Check `),
        );
        expect(error.message).toContain("cinder-backup's log");
        await waitForBackup(demo.cinder, id, waits);
        await waitForVolume(demo.cinder, sourceId, waits);
      });

      it("CLOUD_RESOURCE_FAILED: a backup of a volume whose file is gone, with Cinder's fail_reason", async () => {
        const id = await createVolume(demo, "vanished");
        await rm(path.join(cloud!.volumesDir, `volume-${id}`));
        const backupId = await startBackup(demo, id, "of-vanished");
        const error = await rejectionOf(waitForBackup(demo.cinder, backupId, waits));
        expect(error.code).toBe("CLOUD_RESOURCE_FAILED");
        const { fail_reason: reason } = await demo.cinder.getBackup(backupId);
        expect(reason).toBeTruthy();
        expect(error.message).toContain(`cinder backup ${backupId} went to status "error": ${reason}`);
        expect(error.message).toContain("No such file or directory");
        await waitForVolume(demo.cinder, id, waits);
      });
    });
  });

  describe("glance", () => {
    const tempDir = useTempDir("clienttest-glance-");
    let imageId: string;

    it("creates an image, uploads a file and downloads it with its hashes checked", async () => {
      const file = path.join(tempDir(), "image.raw");
      const bytes = Buffer.concat([randomBytes(256 * 1024 + 3), Buffer.alloc(4096)]);
      await writeFile(file, bytes);
      const image = await demo.glance.createImage({ name: `${prefix}-image`, properties: { coffer_kind: "test" } });
      imageId = image.id;
      cleanUp(`image ${image.id}`, () => demo.glance.deleteImage(image.id).catch(ignoreNotFound));
      expect(image).toMatchObject({ status: "queued", properties: { coffer_kind: "test" } });

      await demo.glance.uploadImageData(image.id, file);
      const active = await demo.glance.getImage(image.id);
      expect(active).toMatchObject({ status: "active", size: bytes.length });

      const chunks: Buffer[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          chunks.push(chunk);
          done();
        },
      });
      const result = await demo.glance.downloadImageData(image.id, sink);
      expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
      expect(result).toEqual({
        sizeBytes: bytes.length,
        hashAlgo: "sha512",
        hashValue: createHash("sha512").update(bytes).digest("hex"),
        md5: createHash("md5").update(bytes).digest("hex"),
      });
      expect(result.hashValue).toBe(active.os_hash_value);

      const error = await rejectionOf(demo.glance.uploadImageData(image.id, file));
      expectHttpError(error, {
        code: "CLOUD_CONFLICT",
        service: "glance",
        resource: `image ${image.id}`,
        status: 409,
        serverMessage: /: Image status transition from active to saving is not allowed/,
      });
    });

    it("sets and unsets image properties", async () => {
      const image = await demo.glance.getImage(imageId);
      const set = await demo.glance.setImageProperties(image, { coffer_a: "1", coffer_kind: "changed" });
      expect(set.properties).toMatchObject({ coffer_a: "1", coffer_kind: "changed" });
      const unset = await demo.glance.setImageProperties(set, { coffer_a: null, coffer_b: "2" });
      expect(unset.properties).toMatchObject({ coffer_kind: "changed", coffer_b: "2" });
      expect(unset.properties).not.toHaveProperty("coffer_a");
      expect((await demo.glance.getImage(imageId)).properties).toEqual(unset.properties);
    });

    it("lists images page by page", async () => {
      const name = `${prefix}-image`;
      const second = await demo.glance.createImage({ name });
      cleanUp(`image ${second.id}`, () => demo.glance.deleteImage(second.id).catch(ignoreNotFound));
      const { client, requests } = connect(settingsOf(cloud!.demo));
      const listed = await collect(client.glance.listImages({ name }, { limit: 1 }));
      expect(listed.map((image) => image.id).sort()).toEqual([imageId, second.id].sort());
      expect(requests.filter((event) => event.url.endsWith("/v2/images")).length).toBeGreaterThanOrEqual(2);
      await demo.glance.deleteImage(second.id);
    });

    it("deletes the image; then it is a 404", async () => {
      await demo.glance.deleteImage(imageId);
      expectHttpError(await rejectionOf(demo.glance.getImage(imageId)), {
        code: "CLOUD_NOT_FOUND",
        service: "glance",
        resource: `image ${imageId}`,
        status: 404,
        serverMessage: new RegExp(`: No image found with ID ${imageId}`),
      });
    });
  });

  describe("barbican", () => {
    it("lists secrets page by page", async () => {
      const name = `${prefix}-listed`;
      const stored = [];
      for (const payload of [randomBytes(16), randomBytes(16)]) {
        const { id } = await demo.barbican.storeSecret({ name, payload });
        cleanUp(`secret ${id}`, () => demo.barbican.deleteSecret(id).catch(ignoreNotFound));
        stored.push(id);
      }
      const { client, requests } = connect(settingsOf(cloud!.demo));
      const listed = await collect(client.barbican.listSecrets({ name }, { limit: 1 }));
      expect(listed.map((secret) => secret.id).sort()).toEqual(stored.sort());
      expect(requests.filter((event) => event.url.endsWith("/v1/secrets")).length).toBeGreaterThanOrEqual(2);
      for (const id of stored) await demo.barbican.deleteSecret(id);
    });

    it("stores a payload with NUL bytes, gives it back, and deletes it; then it is a 404", async () => {
      const payload = Buffer.concat([Buffer.from([0, 0, 255, 0]), randomBytes(28), Buffer.from([0])]);
      const name = `${prefix}-secret`;
      const { id, ref } = await demo.barbican.storeSecret({ name, payload });
      cleanUp(`secret ${id}`, () => demo.barbican.deleteSecret(id).catch(ignoreNotFound));
      expect(ref).toMatch(new RegExp(`/v1/secrets/${id}$`));
      expect(await demo.barbican.getSecret(ref)).toMatchObject({ id, name, status: "ACTIVE", secret_type: "opaque" });
      expect((await demo.barbican.getSecretPayload(id)).equals(payload)).toBe(true);

      await demo.barbican.deleteSecret(ref);
      expectHttpError(await rejectionOf(demo.barbican.getSecret(id)), {
        code: "CLOUD_NOT_FOUND",
        service: "barbican",
        resource: `secret ${id}`,
        status: 404,
        serverMessage: /: Secret not found\./,
      });
    });
  });
});

function ignoreNotFound(error: unknown): void {
  if (!(isCofferError(error) && error.code === "CLOUD_NOT_FOUND")) throw error;
}

/** A local port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
