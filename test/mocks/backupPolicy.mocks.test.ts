import * as pulumi from "@pulumi/pulumi";
import { RecordingMonitor, SECRET_SIG, SECRET_VALUE } from "../support/recordingMonitor";

const monitor = new RecordingMonitor({
  newResource: (args) => ({
    id: `${args.name}-id`,
    state: { ...args.inputs, documentPath: `/srv/b/.coffer/zones/${args.inputs.zone}/policy.json`, revision: 1 },
  }),
  call: (args) => args.inputs,
});
pulumi.runtime.setMockOptions(monitor, "coffer-test", "unit", false);
// A real engine connection asks the monitor which features it has (secrets among them); mocks alone don't.
beforeAll(() => require("@pulumi/pulumi/runtime/settings").awaitFeatureSupport());

// Imported after the mocks are in place, as the SDK requires.
import * as coffer from "../../sdk";
import { backupPolicyProvider } from "../../sdk/backupPolicy";
import { serializeProvider } from "../support/serializedProvider";

const outputOf = <T>(o: pulumi.Output<T>) => new Promise<T>((resolve) => o.apply(resolve));

describe("BackupPolicy resource class", () => {
  test("registers its own type token, forces the encryption output secret and wires the inputs", async () => {
    const policy = new coffer.BackupPolicy("gold", {
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/b" },
      compression: "zstd",
      encryption: { passphrase: "a plain string passphrase" },
      bandwidthLimitMiBps: 50,
      integrityCheck: "full",
      retention: { keepLast: 7, maxAgeDays: 30 },
    });
    expect(await outputOf(policy.documentPath)).toBe("/srv/b/.coffer/zones/zone-a/policy.json");
    expect(await outputOf(policy.revision)).toBe(1);

    const request = monitor.requests.find((r) => r.name === "gold")!;
    expect(request.type).toBe("pulumi-nodejs:dynamic/coffer:BackupPolicy");
    expect(request.additionalSecretOutputs).toEqual(["encryption", "manifestKey", "signing", "targetKey"]);
    // A directory target has no key: no targetKey input at all.
    expect(request.object.targetKey).toBeUndefined();
    // A plain-string passphrase still reaches the engine marked secret.
    expect(request.object.encryption).toEqual({
      [SECRET_SIG]: SECRET_VALUE,
      value: { passphrase: "a plain string passphrase" },
    });
    expect(request.object).toMatchObject({
      zone: "zone-a",
      compression: "zstd",
      bandwidthLimitMiBps: 50,
      integrityCheck: "full",
    });
    // Project, stack and name: what makes a document written by an earlier incarnation this resource's own.
    expect(request.object.owner).toBe("coffer-test/unit/gold");
    // Every resource carries the one shared shim.
    expect(request.object.__provider).toBe((await serializeProvider(backupPolicyProvider)).text);
  });

  test("caller options are kept alongside the forced secret output", async () => {
    new coffer.BackupPolicy(
      "silver",
      { zone: "zone-b", target: { kind: "directory", path: "/srv/b" } },
      { additionalSecretOutputs: ["settings"], protect: true },
    );
    await new Promise((r) => setTimeout(r, 100));
    const request = monitor.requests.find((r) => r.name === "silver")!;
    expect(request.additionalSecretOutputs.sort()).toEqual([
      "encryption",
      "manifestKey",
      "settings",
      "signing",
      "targetKey",
    ]);
    expect(request.object.encryption).toBeUndefined();
    expect(request.object.signing).toBeUndefined();
  });

  test("a Swift target's key goes apart, marked secret; the rest of the target stays in the clear", async () => {
    const target = { kind: "swift" as const, authUrl: "http://swift:8080/auth/v1.0", user: "a:u", container: "c" };
    new coffer.BackupPolicy("offsite", { zone: "zone-s", target: { ...target, key: "a plain swift key" } });
    await new Promise((r) => setTimeout(r, 100));
    const request = monitor.requests.find((r) => r.name === "offsite")!;
    expect(request.object.target).toEqual(target);
    expect(request.object.targetKey).toEqual({ [SECRET_SIG]: SECRET_VALUE, value: "a plain swift key" });
  });

  test("a signing key given as a plain string reaches the engine marked secret", async () => {
    new coffer.BackupPolicy("signed", {
      zone: "zone-c",
      target: { kind: "directory", path: "/srv/b" },
      signing: { privateKey: "-----BEGIN PRIVATE KEY-----\nplain\n-----END PRIVATE KEY-----\n" },
    });
    await new Promise((r) => setTimeout(r, 100));
    const request = monitor.requests.find((r) => r.name === "signed")!;
    expect(request.object.signing).toEqual({
      [SECRET_SIG]: SECRET_VALUE,
      value: { privateKey: "-----BEGIN PRIVATE KEY-----\nplain\n-----END PRIVATE KEY-----\n" },
    });
  });
});
