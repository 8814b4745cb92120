import { cloudConfig } from "../../provider/openstack/config";
import {
  openCloud,
  waitForBackup,
  waitForBackupDeleted,
  waitForStatus,
  waitForVolume,
} from "../../provider/openstack/index";
import { FakeCloud, cinderError } from "../support/fakeOpenStack";

const config = cloudConfig({
  authUrl: "http://127.0.0.1:5000/v3",
  userName: "demo",
  password: "pw",
  projectName: "demo",
});

function backupReply(status: string, failReason: string | null = null) {
  return {
    json: {
      backup: {
        id: "b-1",
        status,
        fail_reason: failReason,
        volume_id: "v-1",
        size: 1,
        is_incremental: false,
        created_at: "2026-11-26T12:00:00.000000",
      },
    },
  };
}

const volumeInError = {
  id: "v-1",
  status: "error",
  size: 1,
  bootable: "false",
  created_at: "2026-11-26T12:00:00.000000",
};

/** A fake whose backup b-1 answers the given statuses in turn, the last one from then on. */
function backupGoingThrough(...replies: ReturnType<typeof backupReply>[]) {
  const fake = new FakeCloud();
  let call = 0;
  fake.on("GET", /\/backups\/b-1$/, () => replies[Math.min(call++, replies.length - 1)]);
  const cloud = openCloud(config, fake.deps());
  return { fake, cloud, options: { timeoutMs: 60_000, deps: fake.deps() } };
}

describe("waiting for a status", () => {
  test("polls with a growing pause until available, reporting progress", async () => {
    const { fake, cloud, options } = backupGoingThrough(
      backupReply("creating"),
      backupReply("creating"),
      backupReply("creating"),
      backupReply("available"),
    );
    const progress: string[] = [];
    const backup = await waitForBackup(cloud.cinder, "b-1", { ...options, onProgress: (p) => progress.push(p.status) });
    expect(backup.status).toBe("available");
    expect(progress).toEqual(["creating", "creating", "creating", "available"]);
    expect(fake.sleeps).toEqual([500, 750, 1125]);
  });

  test("the pause grows to at most 5 s", async () => {
    const { fake, cloud, options } = backupGoingThrough(
      ...Array(12).fill(backupReply("creating")),
      backupReply("available"),
    );
    await waitForBackup(cloud.cinder, "b-1", options);
    expect(Math.max(...fake.sleeps)).toBe(5000);
  });

  test("an error status fails at once with the backup's fail_reason", async () => {
    const { fake, cloud, options } = backupGoingThrough(
      backupReply("creating"),
      backupReply("error", "'target_portal'"),
    );
    const error = await waitForBackup(cloud.cinder, "b-1", options).catch((e: Error) => e);
    expect(error).toMatchObject({ code: "CLOUD_RESOURCE_FAILED", service: "cinder", resource: "backup b-1" });
    expect((error as Error).message).toMatch(
      /^cinder backup b-1 went to status "error": 'target_portal'\. Check cinder-backup/,
    );
    expect(fake.sleeps).toHaveLength(1);
  });

  test("error_restoring and error_deleting fail too, without a reason said so", async () => {
    for (const status of ["error_restoring", "error_deleting"]) {
      const { cloud, options } = backupGoingThrough(backupReply(status));
      await expect(waitForBackup(cloud.cinder, "b-1", options)).rejects.toThrow(
        `cinder backup b-1 went to status "${status}" (the cloud gives no reason).`,
      );
    }
  });

  test("a volume in error gives Cinder's newest user message about it as the reason", async () => {
    const fake = new FakeCloud();
    fake.on("GET", /\/volumes\/v-1$/, () => ({ json: { volume: volumeInError } }));
    fake.on("GET", /\/messages$/, () => ({
      json: {
        messages: [
          { user_message: "schedule allocate volume:Could not find any available weighted backend.", created_at: "b" },
          { user_message: "an older message", created_at: "a" },
        ],
      },
    }));
    const cloud = openCloud(config, fake.deps());
    await expect(waitForVolume(cloud.cinder, "v-1", { timeoutMs: 60_000, deps: fake.deps() })).rejects.toThrow(
      'cinder volume v-1 went to status "error": schedule allocate volume:Could not find any available weighted ' +
        "backend. Check cinder-volume's",
    );
    const asked = fake.serviceRequests().find((req) => req.url.pathname.endsWith("/messages"))!;
    expect(Object.fromEntries(asked.url.searchParams)).toEqual({ resource_uuid: "v-1", sort: "created_at:desc" });
    expect(asked.headers.get("OpenStack-API-Version")).toBe("volume 3.64");
  });

  test("when the messages can't be read or there are none, the failure is still said, without a reason", async () => {
    for (const messages of [() => cinderError("Forbidden", 403, "no"), () => ({ json: { messages: [] } })]) {
      const fake = new FakeCloud();
      fake.on("GET", /\/volumes\/v-1$/, () => ({ json: { volume: volumeInError } }));
      fake.on("GET", /\/messages$/, messages);
      const cloud = openCloud(config, fake.deps());
      const error = await waitForVolume(cloud.cinder, "v-1", { timeoutMs: 60_000, deps: fake.deps() }).catch((e) => e);
      expect(error).toMatchObject({ code: "CLOUD_RESOURCE_FAILED" });
      expect((error as Error).message).toMatch(
        /^cinder volume v-1 went to status "error" \(the cloud gives no reason\)/,
      );
    }
  });

  test("a backup without a fail_reason falls back to Cinder's user message", async () => {
    const { fake, cloud, options } = backupGoingThrough(backupReply("error"));
    fake.on("GET", /\/messages$/, () => ({
      json: { messages: [{ user_message: "backup failed.", created_at: "a" }] },
    }));
    await expect(waitForBackup(cloud.cinder, "b-1", options)).rejects.toThrow(
      'cinder backup b-1 went to status "error": backup failed.',
    );
  });

  test("a timeout names the resource, the status it is stuck in, and what to check", async () => {
    const { fake, cloud } = backupGoingThrough(backupReply("creating"));
    const error = await waitForBackup(cloud.cinder, "b-1", { timeoutMs: 30_000, deps: fake.deps() }).catch((e) => e);
    expect(error).toMatchObject({ code: "CLOUD_TIMEOUT" });
    expect((error as Error).message).toBe(
      'cinder backup b-1 is still "creating" after 30 s (waiting for "available"). ' +
        "Check cinder-backup's log and `openstack volume service list` (is cinder-backup up?).",
    );
    expect(fake.sleeps.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(30_000);
  });

  test("a deletion wait ends on 404", async () => {
    const fake = new FakeCloud();
    fake.on("GET", /\/backups\/b-1$/, () => cinderError("itemNotFound", 404, "Backup b-1 could not be found."));
    fake.on("GET", /\/backups\/b-1$/, () => backupReply("deleting"), 2);
    const cloud = openCloud(config, fake.deps());
    const seen: string[] = [];
    await waitForBackupDeleted(cloud.cinder, "b-1", {
      timeoutMs: 60_000,
      deps: fake.deps(),
      onProgress: (p) => seen.push(p.status),
    });
    expect(seen).toEqual(["deleting", "deleting", "deleted"]);
  });

  test("a deletion wait fails on error_deleting, and other errors pass through", async () => {
    const { cloud, options } = backupGoingThrough(backupReply("error_deleting", "still has dependent backups"));
    await expect(waitForBackupDeleted(cloud.cinder, "b-1", options)).rejects.toThrow(/still has dependent backups/);
    const fake = new FakeCloud();
    await expect(
      waitForStatus({
        what: "glance image i",
        get: () => Promise.reject(new Error("boom")),
        status: () => "x",
        until: ["active"],
        timeoutMs: 1000,
        deps: fake.deps(),
      }),
    ).rejects.toThrow("boom");
  });
});
