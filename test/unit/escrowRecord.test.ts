import { generateKeyPairSync } from "node:crypto";
import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { RecipientKey, parseRecipientKey } from "../../provider/escrow/envelope";
import {
  escrowVolumeKey,
  readRecord,
  recordVersions,
  recoverSecret,
  volumeKeyRecordId,
  writeRecord,
} from "../../provider/escrow/record";
import { useTempDir } from "../support/tempDir";

const SECRET = "the policy passphrase, escrowed";
const tempDir = useTempDir();
const pairs = [generateKeyPairSync("x25519"), generateKeyPairSync("x25519"), generateKeyPairSync("x25519")];
const publicPem = (i: number) => pairs[i].publicKey.export({ type: "spki", format: "pem" }) as string;
const privatePem = (i: number) => pairs[i].privateKey.export({ type: "pkcs8", format: "pem" }) as string;
const recipients = ["dr-team", "security", "cto"].map((name, i) => {
  const parsed = parseRecipientKey(publicPem(i));
  if (!parsed.ok) throw new Error(parsed.reason);
  return { name, key: parsed.key as RecipientKey };
});

describe("escrow records", () => {
  test("a version is one 0600 file under the record's id, with no trace of the secret", async () => {
    const { path: file, digest } = await writeRecord(tempDir(), "gold-passphrase", 1, SECRET, recipients, 2);
    expect(file).toBe(path.join(tempDir(), "gold-passphrase", "v1.json"));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await fs.readFile(file, "utf8")).not.toContain(SECRET);
    const read = await readRecord(tempDir(), "gold-passphrase", 1);
    expect(read?.digest).toBe(digest);
    expect(read?.record.sealed.recipients.map((r) => r.name)).toEqual(["dr-team", "security", "cto"]);
  });

  test("recovery takes the newest version unless one is named, and needs the threshold of keys", async () => {
    await writeRecord(tempDir(), "p", 1, "old secret value", recipients, 2);
    await writeRecord(tempDir(), "p", 2, SECRET, recipients, 2);
    expect(await recordVersions(tempDir(), "p")).toEqual([1, 2]);
    expect(await recoverSecret(tempDir(), "p", [privatePem(0), privatePem(2)])).toBe(SECRET);
    expect(await recoverSecret(tempDir(), "p", [privatePem(1), privatePem(2)], 1)).toBe("old secret value");
    await expect(recoverSecret(tempDir(), "p", [privatePem(1)])).rejects.toThrow(/needs keys of 2 recipients; got 1/);
    await expect(recoverSecret(tempDir(), "missing", [privatePem(1)])).rejects.toThrow(/no escrow record "missing"/);
  });

  test("a volume key is escrowed once, as bytes: hex gives the passphrase Cinder hands LUKS", async () => {
    const bytes = Buffer.from("00ff10203040506070809a0b0c0d0e0f00ff10203040506070809a0b0c0d0e0f", "hex");
    const barbicanSecret = "71f34a8d-6ec8-472f-838e-f29a69bdfd97";
    const id = await escrowVolumeKey(tempDir(), { barbicanSecret, bytes }, recipients, 2);
    expect(id).toBe(volumeKeyRecordId(barbicanSecret));
    const file = path.join(tempDir(), id, "v1.json");
    const text = await fs.readFile(file, "utf8");
    expect(text).not.toContain(bytes.toString("base64"));
    expect(text).not.toContain(bytes.toString("hex"));
    const read = await readRecord(tempDir(), id, 1);
    expect(read?.record).toMatchObject({ schemaVersion: 2, content: { type: "volume-key", barbicanSecret } });
    const keys = [privatePem(0), privatePem(1)];
    expect(await recoverSecret(tempDir(), id, keys, undefined, "hex")).toBe(bytes.toString("hex"));
    expect(await recoverSecret(tempDir(), id, keys)).toBe(bytes.toString("base64"));
    // Escrowing the same key again keeps the record as it was.
    await escrowVolumeKey(tempDir(), { barbicanSecret, bytes: Buffer.alloc(32) }, recipients, 2);
    expect(await fs.readFile(file, "utf8")).toBe(text);
    expect(await recordVersions(tempDir(), id)).toEqual([1]);
  });

  test("a passphrase's record is still schema 1 and refuses --format hex", async () => {
    await writeRecord(tempDir(), "p", 1, SECRET, recipients, 1);
    expect((await readRecord(tempDir(), "p", 1))?.record.schemaVersion).toBe(1);
    await expect(recoverSecret(tempDir(), "p", [privatePem(0)], undefined, "hex")).rejects.toThrow(
      /holds a passphrase, not a key: leave out --format hex/,
    );
  });

  test("a record copied under another version does not open (the secret is bound to id and version)", async () => {
    await writeRecord(tempDir(), "p", 1, SECRET, recipients, 1);
    const text = await fs.readFile(path.join(tempDir(), "p", "v1.json"), "utf8");
    await fs.writeFile(path.join(tempDir(), "p", "v2.json"), text.replace('"version": 1', '"version": 2'));
    await expect(recoverSecret(tempDir(), "p", [privatePem(0)], 2)).rejects.toThrow(/does not open this record/);
  });
});
