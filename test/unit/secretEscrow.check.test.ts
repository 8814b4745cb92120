import { UNKNOWN } from "../../provider/common/check";
import { provider } from "../../provider/escrow";
import { ed25519Pair, rsaPair, x25519Pair } from "../support/escrowKeys";

const SECRET = "the gold zone passphrase";
const dr = x25519Pair();
const security = rsaPair(3072);
const weak = rsaPair(2048);
const valid = {
  __provider: "exports.handler = ...",
  secret: SECRET,
  recipients: [
    { name: "dr-team", publicKey: dr.publicKey },
    { name: "security", publicKey: security.publicKey },
  ],
  threshold: 1,
  store: { kind: "directory", path: "/srv/escrow/" },
  recordId: "gold-passphrase",
};

async function failuresFor(news: Record<string, unknown>) {
  return (await provider.check({}, news)).failures ?? [];
}

describe("SecretEscrow check", () => {
  test("accepts the documented example, normalizes the store and fills defaults", async () => {
    const result = await provider.check({}, valid);
    expect(result.failures).toBeUndefined();
    const { __provider: _p, ...expected } = valid;
    expect(result.inputs).toEqual({
      ...expected,
      store: { kind: "directory", path: "/srv/escrow" },
      forceDelete: false,
      recordStatus: "ok",
    });
    const noThreshold = await provider.check({}, { ...valid, threshold: undefined });
    expect(noThreshold.inputs?.threshold).toBe(1);
  });

  test.each([
    ["an empty secret", { secret: "" }, "secret", /secret must not be empty/],
    ["a missing secret", { secret: undefined }, "secret", /secret is required/],
    ["no recipients", { recipients: [] }, "recipients", /at least one holder/],
    [
      "a malformed public key",
      {
        recipients: [
          { name: "dr-team", publicKey: "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----" },
        ],
      },
      "recipients.0.publicKey",
      /recipients\[0\].publicKey \(dr-team\) is not a PEM public key/,
    ],
    [
      "a private key given as the public key",
      { recipients: [{ name: "dr-team", publicKey: "ssh-ed25519 AAAAC3Nza" }] },
      "recipients.0.publicKey",
      /not a PEM public key: give the recipient's public key/,
    ],
    [
      "a 2048-bit RSA key",
      { recipients: [{ name: "dr-team", publicKey: weak.publicKey }] },
      "recipients.0.publicKey",
      /RSA key of 2048 bits: use 3072 bits or more, or X25519/,
    ],
    [
      "an Ed25519 key",
      { recipients: [{ name: "dr-team", publicKey: ed25519Pair().publicKey }] },
      "recipients.0.publicKey",
      /is a ed25519 key: use RSA \(3072 bits or more\) or X25519/,
    ],
    ["a missing public key", { recipients: [{ name: "dr-team" }] }, "recipients.0.publicKey", /publicKey is required/],
    [
      "a recipient without a name",
      { recipients: [{ publicKey: dr.publicKey }] },
      "recipients.0.name",
      /name is required/,
    ],
    ["a threshold of 0", { threshold: 0 }, "threshold", /at least 1/],
    [
      "a threshold above the recipients",
      { threshold: 3 },
      "threshold",
      /threshold 3 is more than the 2 recipient\(s\).*use 1 to 2/,
    ],
    ["a fractional threshold", { threshold: 1.5 }, "threshold", /whole number/],
    ["a relative store", { store: { kind: "directory", path: "escrow" } }, "store.path", /store.path must be absolute/],
    ["/ as the store", { store: { kind: "directory", path: "/" } }, "store.path", /dedicated .*\/srv\/escrow.*not \//],
    ["another store kind", { store: { kind: "barbican", path: "/x" } }, "store.kind", /store.kind must be "directory"/],
    ["a record id that leaves the store", { recordId: "../etc" }, "recordId", /recordId must be 1-128 letters/],
    ["forceDelete given as text", { forceDelete: "yes" }, "forceDelete", /true or false/],
    ["a misspelt field", { treshold: 1 }, "treshold", /not a known field: check its spelling/],
    ["a recordStatus other than ok", { recordStatus: "missing" }, "recordStatus", /set by Coffer/],
  ])("rejects %s, naming the field and the fix", async (_what, change, property, reason) => {
    const failures = await failuresFor({ ...valid, ...change });
    expect(failures).toEqual([expect.objectContaining({ property, reason: expect.stringMatching(reason) })]);
  });

  test("rejects duplicate names and one key given to two recipients", async () => {
    const twice = await failuresFor({
      ...valid,
      recipients: [valid.recipients[0], { name: "dr-team", publicKey: security.publicKey }],
    });
    expect(twice).toEqual([
      {
        property: "recipients.1.name",
        reason: expect.stringMatching(/"dr-team" is used twice \(also recipients\[0\]\)/),
      },
    ]);
    const sameKey = await failuresFor({
      ...valid,
      recipients: [valid.recipients[0], { name: "backup", publicKey: dr.publicKey }],
    });
    expect(sameKey).toEqual([
      { property: "recipients.1.publicKey", reason: expect.stringMatching(/same key as recipients\[0\]/) },
    ]);
  });

  test("reports every bad recipient at once, and never the secret", async () => {
    const failures = await failuresFor({
      ...valid,
      recipients: [
        { name: "a", publicKey: weak.publicKey },
        { name: "b", publicKey: "junk" },
      ],
    });
    expect(failures.map((f) => f.property)).toEqual(["recipients.0.publicKey", "recipients.1.publicKey"]);
    expect(JSON.stringify(failures)).not.toContain(SECRET);
  });

  test("lets values that are unknown during preview through", async () => {
    expect(await failuresFor({ ...valid, secret: UNKNOWN })).toEqual([]);
    expect(await failuresFor({ ...valid, recipients: [{ name: "dr-team", publicKey: UNKNOWN }] })).toEqual([]);
    // A known bad value is still reported next to an unknown one.
    expect(await failuresFor({ ...valid, secret: UNKNOWN, threshold: 0 })).toEqual([
      expect.objectContaining({ property: "threshold" }),
    ]);
  });
});
