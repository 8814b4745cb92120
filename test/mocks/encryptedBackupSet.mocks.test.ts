import * as pulumi from "@pulumi/pulumi";
import { RecordingMonitor, SECRET_SIG, SECRET_VALUE } from "../support/recordingMonitor";

const monitor = new RecordingMonitor({
  newResource: (args) => {
    if (args.type.endsWith(":BackupPolicy")) {
      return {
        id: "zone-a-1",
        state: {
          ...args.inputs,
          compression: "zstd",
          integrityCheck: "full",
          bandwidthLimitMiBps: 50,
          manifestKey: "bWs=",
          settings: {
            compression: "zstd",
            encryption: { enabled: true, format: "luks", passphraseFingerprint: "hmac-sha256:00" },
            bandwidthLimitMiBps: 50,
            integrityCheck: "full",
            retention: {},
          },
        },
      };
    }
    return {
      id: "set-1",
      state: {
        ...args.inputs,
        setId: "set-1",
        verification: { status: "ok", checkedAt: "t", level: "full", failures: [] },
      },
    };
  },
  call: (args) => args.inputs,
});
pulumi.runtime.setMockOptions(monitor, "coffer-test", "unit", false);
beforeAll(() => require("@pulumi/pulumi/runtime/settings").awaitFeatureSupport());

import * as coffer from "../../sdk";

describe("EncryptedBackupSet resource class", () => {
  test("its own type token; the policy's settings in the clear, its keys as one secret input", async () => {
    const policy = new coffer.BackupPolicy("gold", {
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/b" },
      compression: "zstd",
      encryption: { passphrase: "a long passphrase here" },
    });
    const set = new coffer.EncryptedBackupSet("nightly", {
      policy,
      sources: [
        { name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.qcow2" },
        { name: "db-1-vda", qmpSocket: "/run/qemu/db-1.qmp", device: "vda" },
      ],
      trigger: "2026-11-24",
    });
    await new Promise<void>((resolve) => set.verification.apply(() => resolve()));
    const request = monitor.requests.find((r) => r.name === "nightly")!;
    expect(request.type).toBe("pulumi-nodejs:dynamic/coffer:EncryptedBackupSet");
    expect(request.additionalSecretOutputs).toEqual(["keys", "keyring"]);
    expect(request.object.policy).toEqual({
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/b" },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 50,
      encrypted: true,
    });
    expect(request.object.keys[SECRET_SIG]).toBe(SECRET_VALUE);
    // Only the key the set uses: an encrypted set's manifest is signed with the passphrase.
    expect(request.object.keys.value).toEqual({ passphrase: "a long passphrase here" });
    expect(request.object.sources).toHaveLength(2);
    expect(request.object.trigger).toBe("2026-11-24");
  });

  test.each([
    [true, { copyToTarget: true }],
    [false, {}],
  ])("a policy's copyToTarget %s reaches its sets' policy input only when on", async (copies, expected) => {
    const policy = new coffer.BackupPolicy(`copying-${copies}`, {
      zone: "zone-c",
      target: { kind: "directory", path: "/srv/b" },
      encryption: { passphrase: "a long passphrase here" },
      copyToTarget: copies,
    });
    const set = new coffer.EncryptedBackupSet(`copying-nightly-${copies}`, {
      policy,
      sources: [{ name: "db", cinderVolume: "9d1c6a3e-0b5e-4b8e-9a57-3c1c3b0b7f10" }],
      trigger: "2026-11-24",
    });
    await new Promise<void>((resolve) => set.verification.apply(() => resolve()));
    expect(monitor.requests.find((r) => r.name === `copying-${copies}`)!.object.copyToTarget).toBe(copies);
    const request = monitor.requests.find((r) => r.name === `copying-nightly-${copies}`)!;
    const { copyToTarget: _copies, ...settings } = request.object.policy;
    expect(settings).toEqual({
      id: "zone-a-1",
      zone: "zone-c",
      target: { kind: "directory", path: "/srv/b" },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 50,
      encrypted: true,
    });
    expect(request.object.policy).toEqual({ ...settings, ...expected });
    // The source keeps what it declared: the policy's flag is applied when a point is planned.
    expect(request.object.sources[0]).not.toHaveProperty("copyToTarget");
  });

  test("a policy's signing key reaches its sets inside the secret keys, never in the clear", async () => {
    const privateKey = "-----BEGIN PRIVATE KEY-----\nsigning\n-----END PRIVATE KEY-----\n";
    const policy = new coffer.BackupPolicy("signed", {
      zone: "zone-b",
      target: { kind: "directory", path: "/srv/b" },
      encryption: { passphrase: "a long passphrase here" },
      signing: { privateKey },
    });
    const set = new coffer.EncryptedBackupSet("signed-nightly", {
      policy,
      sources: [{ name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.qcow2" }],
      trigger: "2026-11-24",
    });
    await new Promise<void>((resolve) => set.verification.apply(() => resolve()));
    const request = monitor.requests.find((r) => r.name === "signed-nightly")!;
    expect(request.object.keys[SECRET_SIG]).toBe(SECRET_VALUE);
    expect(request.object.keys.value).toEqual({ passphrase: "a long passphrase here", signingKey: privateKey });
    const { keys: _keys, ...clear } = request.object;
    expect(JSON.stringify(clear)).not.toContain("signing\\n");
  });
});
