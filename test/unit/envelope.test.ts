import { generateKeyPairSync } from "node:crypto";
import { RecipientKey, open, parseRecipientKey, seal } from "../../provider/escrow/envelope";

const SECRET = "correct horse battery staple, escrowed";
const pem = (k: { export(o: object): string | Buffer }) => k.export({ type: "spki", format: "pem" }) as string;
const privatePem = (k: { export(o: object): string | Buffer }) => k.export({ type: "pkcs8", format: "pem" }) as string;

// RSA-3072 generation is slow: one pair for the suite.
const rsa = generateKeyPairSync("rsa", { modulusLength: 3072 });
const x1 = generateKeyPairSync("x25519");
const x2 = generateKeyPairSync("x25519");

function recipient(name: string, publicPem: string) {
  const parsed = parseRecipientKey(publicPem);
  if (!parsed.ok) throw new Error(parsed.reason);
  return { name, key: parsed.key as RecipientKey };
}

describe("recipient keys", () => {
  test("RSA of 3072 bits and X25519 are accepted, with a SHA-256 fingerprint of the public key", () => {
    const r = parseRecipientKey(pem(rsa.publicKey));
    const x = parseRecipientKey(pem(x1.publicKey));
    expect(r).toMatchObject({
      ok: true,
      key: { type: "rsa", fingerprint: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) },
    });
    expect(x).toMatchObject({ ok: true, key: { type: "x25519" } });
  });

  test.each([
    [
      "a 2048-bit RSA key",
      () => pem(generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey),
      /RSA key of 2048 bits: use 3072 bits or more/,
    ],
    [
      "an EC key",
      () => pem(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey),
      /is a ec key: use RSA .* or X25519/,
    ],
    ["an Ed25519 key", () => pem(generateKeyPairSync("ed25519").publicKey), /is a ed25519 key/],
    [
      "text that is not PEM",
      () => "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----",
      /not a PEM public key/,
    ],
  ])("%s is refused with the fix", (_what, make, reason) => {
    expect(parseRecipientKey(make())).toEqual({ ok: false, reason: expect.stringMatching(reason) });
  });
});

describe("seal and open", () => {
  test("threshold 1: each recipient alone recovers the secret; the sealed form holds no trace of it", async () => {
    const sealed = await seal(
      SECRET,
      [recipient("dr-team", pem(rsa.publicKey)), recipient("security", pem(x1.publicKey))],
      1,
      "rec-1/v1",
    );
    expect(await open(sealed, [privatePem(rsa.privateKey)], "rec-1/v1")).toBe(SECRET);
    expect(await open(sealed, [privatePem(x1.privateKey)], "rec-1/v1")).toBe(SECRET);
    const text = JSON.stringify(sealed);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain(Buffer.from(SECRET).toString("base64"));
    const { createHash } = require("node:crypto");
    expect(text).not.toContain(createHash("sha256").update(SECRET).digest("hex"));
    expect(sealed.recipients.map((r) => [r.name, r.type, r.wrapped.alg])).toEqual([
      ["dr-team", "rsa", "RSA-OAEP-SHA256"],
      ["security", "x25519", "X25519-HKDF-SHA256-A256GCM"],
    ]);
  });

  test("threshold 2 of 3: any two keys recover it, one is not enough", async () => {
    const sealed = await seal(
      SECRET,
      [recipient("a", pem(rsa.publicKey)), recipient("b", pem(x1.publicKey)), recipient("c", pem(x2.publicKey))],
      2,
      "rec-2/v1",
    );
    expect(await open(sealed, [privatePem(rsa.privateKey), privatePem(x2.privateKey)], "rec-2/v1")).toBe(SECRET);
    expect(await open(sealed, [privatePem(x1.privateKey), privatePem(x2.privateKey)], "rec-2/v1")).toBe(SECRET);
    await expect(open(sealed, [privatePem(x1.privateKey)], "rec-2/v1")).rejects.toThrow(
      /needs keys of 2 recipients; got 1/,
    );
    await expect(open(sealed, [privatePem(x1.privateKey), privatePem(x1.privateKey)], "rec-2/v1")).rejects.toThrow(
      /got 1/,
    );
  });

  test("a key of someone else, a changed ciphertext, or another context does not open it, and says why", async () => {
    const sealed = await seal(SECRET, [recipient("a", pem(x1.publicKey))], 1, "rec-3/v1");
    await expect(open(sealed, [privatePem(x2.privateKey)], "rec-3/v1")).rejects.toMatchObject({
      code: "WRONG_KEY",
      message: expect.stringMatching(/not one of this record's recipients \(a\)/),
    });
    await expect(open(sealed, ["not a key"], "rec-3/v1")).rejects.toThrow(/not a PEM private key/);
    await expect(open(sealed, [privatePem(x1.privateKey)], "rec-4/v1")).rejects.toThrow(/does not open this record/);
    const tampered = {
      ...sealed,
      ciphertext: Buffer.from(Buffer.from(sealed.ciphertext, "base64").map((b, i) => (i === 0 ? b ^ 1 : b))).toString(
        "base64",
      ),
    };
    await expect(open(tampered, [privatePem(x1.privateKey)], "rec-3/v1")).rejects.toMatchObject({
      code: "VERIFY_FAILED",
    });
  });
});
