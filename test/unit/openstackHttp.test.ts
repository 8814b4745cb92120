import { rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { cloudConfig } from "../../provider/openstack/config";
import { openCloud } from "../../provider/openstack/index";
import { serverMessageOf } from "../../provider/openstack/cloudError";
import { retryAfterMs } from "../../provider/openstack/http";
import { causeText } from "../../provider/openstack/httpErrors";
import { FakeCloud, cinderError, serializeError, type FakeReply } from "../support/fakeOpenStack";

const password = "pw-Hunter2-very-secret";
const config = cloudConfig({
  authUrl: "http://127.0.0.1:5000/v3",
  userName: "demo",
  password,
  projectName: "demo",
  maxRetries: "3",
});
const backupPath = /^\/v3\/[0-9a-f]+\/backups\/b-1$/;

function setUp(reply?: FakeReply | Error, times = Infinity) {
  const fake = new FakeCloud();
  if (reply) fake.on("GET", backupPath, () => reply, times);
  return { fake, cloud: openCloud(config, fake.deps(), { timeoutMs: 50 }) };
}

async function failure(promise: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof Error)) throw new Error("expected a rejection");
  return error as Error & Record<string, unknown>;
}

describe("HTTP errors become CofferErrors naming service, resource, status, server message and request id", () => {
  const cases: [number, string, FakeReply, RegExp][] = [
    [401, "CLOUD_AUTH_FAILED", cinderError("unauthorized", 401, "Token not valid"), /Check the credentials/],
    [403, "CLOUD_FORBIDDEN", cinderError("forbidden", 403, "Policy doesn't allow backup:get"), /roles/],
    [404, "CLOUD_NOT_FOUND", cinderError("itemNotFound", 404, "Backup b-1 could not be found."), /deleted/],
    [409, "CLOUD_CONFLICT", cinderError("conflictingRequest", 409, "Invalid backup: busy"), /busy/],
    [413, "CLOUD_QUOTA", cinderError("overLimit", 413, "BackupLimitExceeded: Maximum number of backups"), /quota/],
    [400, "CLOUD_BAD_REQUEST", cinderError("badRequest", 400, "Invalid input received"), /rejected/],
    [500, "CLOUD_UNAVAILABLE", cinderError("computeFault", 500, "The server has either erred"), /request id/],
  ];
  test.each(cases)("HTTP %i → %s", async (status, code, reply, advice) => {
    const { fake, cloud } = setUp(reply);
    const error = await failure(cloud.cinder.getBackup("b-1"));
    const serverMessage = Object.values(reply.json as Record<string, { message: string }>)[0].message;
    expect(error).toMatchObject({
      code,
      service: "cinder",
      resource: "backup b-1",
      status,
      requestId: `req-${status}`,
    });
    expect(error.message).toContain(`cinder backup b-1: HTTP ${status}`);
    expect(error.message).toContain(serverMessage);
    expect(error.message).toContain(`(request id req-${status})`);
    expect(error.message).toMatch(advice);
    // 401 is retried once with a new token; the others are sent once.
    expect(fake.serviceRequests()).toHaveLength(status === 401 ? 2 : 1);
  });

  test("a 504 still failing after the retries is CLOUD_UNAVAILABLE; a connection error names the host", async () => {
    const { fake, cloud } = setUp({ status: 504, raw: "<html><title>504</title><body>Gateway Timeout</body></html>" });
    const error = await failure(cloud.cinder.getBackup("b-1"));
    expect(error).toMatchObject({ code: "CLOUD_UNAVAILABLE", status: 504 });
    expect(error.message).toContain("Gateway Timeout");
    expect(fake.serviceRequests()).toHaveLength(4);
    expect(fake.sleeps).toEqual([500, 1000, 2000]);
    const refused = Object.assign(new TypeError("fetch failed"), {
      cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:8776"), { code: "ECONNREFUSED" }),
    });
    const down = setUp(refused);
    const downError = await failure(down.cloud.cinder.getBackup("b-1"));
    expect(downError).toMatchObject({ code: "CLOUD_UNAVAILABLE" });
    expect(downError.message).toContain(
      "no connection to http://127.0.0.1:8776 (connect ECONNREFUSED 127.0.0.1:8776) on GET",
    );
    expect(down.fake.serviceRequests()).toHaveLength(4);
  });

  test("a connection error from another realm (fetch seen from a vm: Jest, Pulumi) names its cause", async () => {
    const refused: unknown = runInNewContext(
      'Object.assign(new TypeError("fetch failed"), { cause: Object.assign(new Error("connect ECONNREFUSED ' +
        '127.0.0.1:8776"), { code: "ECONNREFUSED" }) })',
    );
    expect(refused instanceof Error).toBe(false);
    const fake = new FakeCloud();
    const fetch = (url: string, init: RequestInit) =>
      url.includes("auth/tokens") ? fake.deps().fetch(url, init) : Promise.reject(refused);
    const cloud = openCloud(config, { ...fake.deps(), fetch });
    const error = await failure(cloud.cinder.getBackup("b-1"));
    expect(error.code).toBe("CLOUD_UNAVAILABLE");
    expect(error.message).toContain(
      "no connection to http://127.0.0.1:8776 (connect ECONNREFUSED 127.0.0.1:8776) on GET",
    );
    expect(causeText(runInNewContext('Object.assign(new Error("socket hang up"), { code: "ECONNRESET" })'))).toBe(
      "ECONNRESET: socket hang up",
    );
  });

  test("a request with no answer within the timeout is CLOUD_TIMEOUT", async () => {
    const fake = new FakeCloud();
    const cloud = openCloud(
      config,
      {
        ...fake.deps(),
        fetch: (url, init) =>
          url.includes("auth/tokens")
            ? fake.deps().fetch(url, init)
            : new Promise((_, reject) => init.signal?.addEventListener("abort", () => reject(init.signal?.reason))),
      },
      { timeoutMs: 30 },
    );
    const error = await failure(cloud.cinder.getBackup("b-1"));
    expect(error).toMatchObject({ code: "CLOUD_TIMEOUT", service: "cinder", resource: "backup b-1" });
    expect(error.message).toMatch(/no response within 0.03 s on GET \/v3\/.*\/backups\/b-1/);
  });

  test("a body that is not what the API reference says is CLOUD_BAD_RESPONSE naming the field", async () => {
    const { cloud } = setUp({ json: { backup: { id: "b-1", status: 7 } } });
    const error = await failure(cloud.cinder.getBackup("b-1"));
    expect(error).toMatchObject({ code: "CLOUD_BAD_RESPONSE" });
    expect(error.message).toMatch(/response's backup\.status is unexpected/);
  });
});

describe("retries", () => {
  const backup = {
    backup: { id: "b-1", status: "available", volume_id: "v", size: 1, is_incremental: false, created_at: "x" },
  };

  test("503 then success: retried after backoff; onRequest sees every attempt", async () => {
    const { fake, cloud } = setUp({ json: backup });
    fake.on("GET", backupPath, () => ({ status: 503, raw: "busy" }), 2); // answers first, twice
    expect((await cloud.cinder.getBackup("b-1")).status).toBe("available");
    expect(fake.sleeps).toEqual([500, 1000]);
    const attempts = fake.events.filter((e) => e.service === "cinder").map((e) => [e.attempt, e.status]);
    expect(attempts).toEqual([
      [1, 503],
      [2, 503],
      [3, 200],
    ]);
    expect(fake.logLines.filter((line) => line.includes("HTTP 503; retry"))).toHaveLength(2);
  });

  test("429 honours Retry-After, even for a POST; a too-long Retry-After fails at once as CLOUD_QUOTA", async () => {
    const fake = new FakeCloud();
    fake.on("POST", /\/backups$/, () => ({ status: 202, json: { backup: { id: "b-9", name: "n" } } }));
    fake.on("POST", /\/backups$/, () => ({ status: 429, raw: "slow down", headers: { "Retry-After": "7" } }), 1);
    const cloud = openCloud(config, fake.deps());
    expect(await cloud.cinder.createBackup({ volumeId: "v-1" })).toEqual({ id: "b-9" });
    expect(fake.sleeps).toEqual([7000]);
    fake.on("POST", /\/backups$/, () => ({
      status: 429,
      json: { overLimit: { message: "Rate" } },
      headers: { "Retry-After": "3600" },
    }));
    const error = await failure(cloud.cinder.createBackup({ volumeId: "v-1" }));
    expect(error).toMatchObject({ code: "CLOUD_QUOTA", status: 429 });
    expect(fake.sleeps).toEqual([7000]);
  });

  test("a POST is not retried on 503 (it may have been done)", async () => {
    const fake = new FakeCloud();
    fake.on("POST", /\/backups$/, () => ({ status: 503, raw: "" }));
    const error = await failure(openCloud(config, fake.deps()).cinder.createBackup({ volumeId: "v-1" }));
    expect(error).toMatchObject({ code: "CLOUD_UNAVAILABLE", status: 503 });
    expect(fake.serviceRequests()).toHaveLength(1);
  });

  test("an upload streaming a file is sent once, even on 429 (the stream is spent)", async () => {
    const fake = new FakeCloud();
    fake.on("PUT", /\/file$/, () => ({ status: 429, raw: "", headers: { "Retry-After": "1" } }));
    const file = path.join(os.tmpdir(), `coffer-upload-${process.pid}.raw`);
    writeFileSync(file, "bytes");
    const error = await failure(openCloud(config, fake.deps()).glance.uploadImageData("img-1", file));
    rmSync(file, { force: true });
    expect(error).toMatchObject({ code: "CLOUD_QUOTA", service: "glance", resource: "image img-1" });
    expect(fake.serviceRequests()).toHaveLength(1);
  });

  test("Retry-After as seconds or an HTTP date", () => {
    const now = Date.parse("2026-11-26T12:00:00Z");
    expect(retryAfterMs("5", now)).toBe(5000);
    expect(retryAfterMs("Thu, 26 Nov 2026 12:00:10 GMT", now)).toBe(10_000);
    expect(retryAfterMs("soon", now)).toBeUndefined();
    expect(retryAfterMs(null, now)).toBeUndefined();
  });
});

describe("server messages from the shapes OpenStack services use", () => {
  test.each([
    ['{"itemNotFound": {"message": "Volume v could not be found.", "code": 404}}', "Volume v could not be found."],
    ['{"error": {"code": 401, "message": "The request requires authentication.", "title": "Unauthorized"}}',
      "The request requires authentication."],
    ['{"code": 404, "title": "Not Found", "description": "Secret not found."}', "Secret not found."],
    ["<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1>No image with ID x</body></html>",
      "404 Not Found No image with ID x"],
    ['{"badRequest": {"message": "Invalid volume: must be available"}}', "Invalid volume: must be available"],
    ["", undefined],
  ])("%s", (body, expected) => {
    expect(serverMessageOf(body)).toBe(expected);
  }); // prettier-ignore
});

describe("no password, token or application-credential secret in any error, cause or log line", () => {
  test("errors whose server messages and causes echo the secrets are redacted everywhere", async () => {
    const fake = new FakeCloud();
    const cloud = openCloud(config, fake.deps());
    await cloud.session.token();
    const [token] = fake.tokens();
    const echo = `token ${token} password ${password}`;
    fake.on("GET", backupPath, () => cinderError("badRequest", 400, echo));
    const errors = [await failure(cloud.cinder.getBackup("b-1"))];
    fake.on("GET", backupPath, () => Object.assign(new TypeError("fetch failed"), { cause: new Error(echo) }));
    errors.push(await failure(cloud.cinder.getBackup("b-1")));
    fake.on("GET", backupPath, () => ({ status: 503, raw: echo }));
    errors.push(await failure(cloud.cinder.getBackup("b-1")));
    for (const error of errors) {
      const text = serializeError(error);
      expect(text).toContain("[secret]");
      expect(text).not.toContain(token);
      expect(text).not.toContain(password);
    }
    expect(fake.logLines.join("\n")).not.toMatch(new RegExp(`${token}|${password}`));
    expect(fake.logLines.length).toBeGreaterThan(0);
  });

  test("a refused application credential's error does not carry its secret", async () => {
    const fake = new FakeCloud();
    const secret = "ac-secret-0123456789";
    fake.on("POST", /auth\/tokens$/, () => ({
      status: 401,
      json: { error: { code: 401, message: `Invalid application credential ${secret}`, title: "Unauthorized" } },
      headers: { "x-openstack-request-id": "req-auth" },
    }));
    const acConfig = cloudConfig({
      authUrl: "http://127.0.0.1:5000/v3",
      applicationCredentialId: "ac1",
      applicationCredentialSecret: secret,
    });
    const error = await failure(openCloud(acConfig, fake.deps()).cinder.getBackup("b-1"));
    expect(error).toMatchObject({ code: "CLOUD_AUTH_FAILED", service: "keystone", requestId: "req-auth" });
    expect(error.message).toContain("keystone token for application credential ac1: HTTP 401");
    expect(serializeError(error)).not.toContain(secret);
  });

  test("a deleted application credential (Keystone's 404) is CLOUD_AUTH_FAILED, not CLOUD_NOT_FOUND", async () => {
    const fake = new FakeCloud();
    fake.on("POST", /auth\/tokens$/, () => ({
      status: 404,
      json: { error: { code: 404, message: "Could not find Application Credential: ac1.", title: "Not Found" } },
      headers: { "x-openstack-request-id": "req-auth" },
    }));
    const acConfig = cloudConfig({
      authUrl: "http://127.0.0.1:5000/v3",
      applicationCredentialId: "ac1",
      applicationCredentialSecret: "ac-secret-0123456789",
    });
    const error = await failure(openCloud(acConfig, fake.deps()).cinder.getBackup("b-1"));
    expect(error).toMatchObject({ code: "CLOUD_AUTH_FAILED", service: "keystone", status: 404, requestId: "req-auth" });
    expect(error.message).toBe(
      "keystone token for application credential ac1: HTTP 404 on POST /v3/auth/tokens: Could not find " +
        "Application Credential: ac1. (request id req-auth). Check the credentials (openstack:userName/password " +
        "or the application credential) and that the user has a role on the project.",
    );
  });

  test("property: whatever the server echoes around the secrets, no error or log line shows them", async () => {
    const fake = new FakeCloud();
    const cloud = openCloud(config, fake.deps());
    const [token] = [(await cloud.session.token()).value];
    const status = fc.constantFrom(400, 403, 404, 409, 413, 500, 503);
    const text = fc.string({ maxLength: 20 });
    await fc.assert(
      fc.asyncProperty(status, text, text, text, async (code, a, b, c) => {
        const echo = `${a}${token}${b}${password}${c}`;
        fake.on("GET", backupPath, () => ({ status: code, json: { error: { message: echo } } }), 4);
        const error = await failure(cloud.cinder.getBackup("b-1"));
        const seen = serializeError(error) + fake.logLines.join("\n");
        return !seen.includes(token) && !seen.includes(password);
      }),
      { numRuns: 60 },
    );
  });
});
