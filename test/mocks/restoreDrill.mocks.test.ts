import * as pulumi from "@pulumi/pulumi";
import { RecordingMonitor, SECRET_SIG, SECRET_VALUE } from "../support/recordingMonitor";

const PASSPHRASE = "a long passphrase here";
const SIGNING_KEY = "-----BEGIN PRIVATE KEY-----\nsigning\n-----END PRIVATE KEY-----\n";
const point = { id: "20261127T030000Z-9f3e", takenAt: "2026-11-27T03:00:00Z", loc: 0, key: 2, status: "ok" };
const location = { targetPath: "/srv/b", zone: "zone-a", manifestHost: "kvm-07", hosts: ["kvm-07"] };
const signer = { pem: "-----BEGIN PUBLIC KEY-----\nk\n-----END PUBLIC KEY-----\n", fingerprint: "SHA256:x" };

const monitor = new RecordingMonitor({
  newResource: (args) => {
    if (args.type.endsWith(":BackupPolicy")) {
      return { id: "zone-a-1", state: { ...args.inputs, manifestKey: "bWs=", integrityCheck: "full" } };
    }
    if (args.type.endsWith(":EncryptedBackupSet")) {
      const state = {
        ...args.inputs,
        setId: "set-1",
        points: [point],
        locations: [location],
        signers: [signer],
        keyVersion: 2,
        keyring: [{ version: 1, passphrase: "an older passphrase" }],
      };
      return { id: "set-1", state };
    }
    return { id: "drill-set-1", state: { ...args.inputs, status: "ok", results: [] } };
  },
  call: (args) => args.inputs,
});
pulumi.runtime.setMockOptions(monitor, "coffer-test", "unit", false);
beforeAll(() => require("@pulumi/pulumi/runtime/settings").awaitFeatureSupport());

import * as coffer from "../../sdk";

describe("RestoreDrill resource class", () => {
  test("its type token; the sets' points in the clear, their keys (no signing key) as one secret", async () => {
    const policy = new coffer.BackupPolicy("gold", {
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/b" },
      encryption: { passphrase: PASSPHRASE },
      signing: { privateKey: SIGNING_KEY },
    });
    const set = new coffer.EncryptedBackupSet("nightly", {
      policy,
      sources: [{ name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.qcow2", host: "kvm-07" }],
      trigger: "2026-11-27",
    });
    const drill = new coffer.RestoreDrill("nightly-drill", {
      sets: [set],
      pick: "sampled",
      boot: { marker: "login:" },
    });
    await new Promise<void>((resolve) => drill.results.apply(() => resolve()));
    const request = monitor.requests.find((r) => r.name === "nightly-drill")!;
    expect(request.type).toBe("pulumi-nodejs:dynamic/coffer:RestoreDrill");
    expect(request.additionalSecretOutputs).toEqual(["keys"]);
    expect(request.object.sets).toEqual([
      { name: "nightly", setId: "set-1", points: [point], locations: [location], signers: [signer] },
    ]);
    expect(request.object.keys[SECRET_SIG]).toBe(SECRET_VALUE);
    expect(request.object.keys.value).toEqual([
      {
        setId: "set-1",
        keyVersion: 2,
        keys: { passphrase: PASSPHRASE },
        keyring: [{ version: 1, passphrase: "an older passphrase" }],
      },
    ]);
    expect(JSON.stringify(request.object)).not.toContain("signing\\n");
    const { keys: _keys, ...clear } = request.object;
    expect(JSON.stringify(clear)).not.toContain(PASSPHRASE);
    expect(request.object).toMatchObject({ pick: "sampled", boot: { marker: "login:" }, status: "ok" });
  });
});
