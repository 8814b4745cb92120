import * as pulumi from "@pulumi/pulumi";
import { RecordingMonitor, SECRET_SIG, SECRET_VALUE } from "../support/recordingMonitor";
const PASSPHRASE = "a long passphrase here";
const monitor = new RecordingMonitor({
  newResource: (args) => {
    if (args.type.endsWith(":SecretEscrow"))
      return { id: args.inputs.recordId, state: { ...args.inputs, version: 3, recordStatus: "ok" } };
    if (args.type.endsWith(":BackupPolicy")) {
      return {
        id: "zone-a-1",
        state: {
          ...args.inputs,
          manifestKey: "bWs=",
          settings: {
            compression: "none",
            encryption: { enabled: true, format: "luks", passphraseFingerprint: "x" },
            bandwidthLimitMiBps: 0,
            integrityCheck: "none",
            retention: {},
            escrow: null,
          },
        },
      };
    }
    return { id: "set-1", state: { ...args.inputs, setId: "set-1" } };
  },
  call: (args) => args.inputs,
});
pulumi.runtime.setMockOptions(monitor, "coffer-test", "unit", false);
beforeAll(() => require("@pulumi/pulumi/runtime/settings").awaitFeatureSupport());

import * as coffer from "../../sdk";

const settled = (output: pulumi.Output<unknown>) => new Promise<void>((resolve) => output.apply(() => resolve()));
const store = { kind: "directory" as const, path: "/srv/escrow" };
const recipients = [{ name: "dr-team", publicKey: "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n" }];

describe("SecretEscrow resource class", () => {
  test("its own type token; the secret is a secret on the wire (even when given in the clear) and as an output", async () => {
    const escrow = new coffer.SecretEscrow("gold-passphrase", { secret: PASSPHRASE, recipients, store });
    await settled(escrow.version);
    const request = monitor.requests.find((r) => r.name === "gold-passphrase")!;
    expect(request.type).toBe("pulumi-nodejs:dynamic/coffer:SecretEscrow");
    expect(request.additionalSecretOutputs).toEqual(["secret"]);
    expect(request.object.secret).toEqual({ [SECRET_SIG]: SECRET_VALUE, value: PASSPHRASE });
    // The record id defaults to the resource's name.
    expect(request.object.recordId).toBe("gold-passphrase");
    expect(request.object.recipients).toEqual(recipients);
    expect(await new Promise((resolve) => pulumi.isSecret(escrow.secret).then(resolve))).toBe(true);
  });

  test("a policy and its sets are told which record holds the passphrase, in the clear, and whether it is the passphrase", async () => {
    const escrow = new coffer.SecretEscrow("zone-a-escrow", {
      secret: PASSPHRASE,
      recipients,
      store,
      recordId: "zone-a-passphrase",
    });
    const other = new coffer.SecretEscrow("other-escrow", { secret: "not the passphrase at all", recipients, store });
    const policy = new coffer.BackupPolicy("zone-a", {
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/b" },
      encryption: { passphrase: PASSPHRASE },
      escrow,
      requireEscrow: true,
    });
    const set = new coffer.EncryptedBackupSet("nightly", {
      policy,
      sources: [{ name: "d", disk: "/d.raw" }],
      trigger: "t",
    });
    const overridden = new coffer.EncryptedBackupSet("other", {
      policy,
      sources: [{ name: "d", disk: "/d.raw" }],
      trigger: "t",
      escrow: other,
    });
    await Promise.all([settled(set.setId), settled(overridden.setId)]);
    const sent = (name: string) => monitor.requests.find((r) => r.name === name)!.object;
    const link = { recordId: "zone-a-passphrase", store: "/srv/escrow", escrowsPassphrase: true };
    expect(sent("zone-a").escrow).toEqual(link);
    expect(sent("zone-a").requireEscrow).toBe(true);
    expect(sent("nightly").escrow).toEqual(link);
    expect(sent("other").escrow).toEqual({ recordId: "other-escrow", store: "/srv/escrow", escrowsPassphrase: false });
  });
});
