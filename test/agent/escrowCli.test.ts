import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { RecipientKey, parseRecipientKey } from "../../provider/escrow/envelope";
import { escrowVolumeKey, writeRecord } from "../../provider/escrow/record";
import { useTempDir } from "../support/tempDir";

const run = promisify(execFile);
const repoRoot = path.resolve(__dirname, "../..");
const tempDir = useTempDir();
const SECRET = "escrowed-passphrase-for-the-drill";
const coffer = (args: string[]) => run(process.execPath, [path.join(repoRoot, "bin/coffer.js"), ...args]);

async function keyFiles(count: number) {
  const files: string[] = [];
  const recipients: { name: string; key: RecipientKey }[] = [];
  for (let i = 0; i < count; i++) {
    const pair = i === 0 ? generateKeyPairSync("rsa", { modulusLength: 3072 }) : generateKeyPairSync("x25519");
    const file = path.join(tempDir(), `recipient-${i}.pem`);
    await fs.writeFile(file, pair.privateKey.export({ type: "pkcs8", format: "pem" }) as string, { mode: 0o600 });
    files.push(file);
    const parsed = parseRecipientKey(pair.publicKey.export({ type: "spki", format: "pem" }) as string);
    if (!parsed.ok) throw new Error(parsed.reason);
    recipients.push({ name: `r${i}`, key: parsed.key });
  }
  return { files, recipients };
}

describe("coffer escrow recover, with nothing but the store and the private keys", () => {
  test("two of three keys print the secret, or write it to a 0600 file", async () => {
    const store = path.join(tempDir(), "escrow");
    const { files, recipients } = await keyFiles(3);
    await writeRecord(store, "gold-passphrase", 1, SECRET, recipients, 2);
    const { stdout } = await coffer([
      "escrow",
      "recover",
      "--store",
      store,
      "--id",
      "gold-passphrase",
      "--key",
      files[0],
      "--key",
      files[2],
    ]);
    expect(stdout).toBe(SECRET + "\n");
    const out = path.join(tempDir(), "recovered");
    await coffer([
      "escrow",
      "recover",
      "--store",
      store,
      "--id",
      "gold-passphrase",
      "--key",
      files[1],
      "--key",
      files[2],
      "--out",
      out,
    ]);
    expect(await fs.readFile(out, "utf8")).toBe(SECRET);
    expect(statSync(out).mode & 0o777).toBe(0o600);
  });

  test("--format hex prints an escrowed volume key as Cinder's LUKS passphrase", async () => {
    const store = path.join(tempDir(), "escrow");
    const { files, recipients } = await keyFiles(1);
    const bytes = Buffer.from("a".repeat(64), "hex");
    const id = await escrowVolumeKey(
      store,
      { barbicanSecret: "5e1c2d3e-0000-4000-8000-000000000001", bytes },
      recipients,
      1,
    );
    const recover = ["escrow", "recover", "--store", store, "--id", id, "--key", files[0]];
    expect((await coffer([...recover, "--format", "hex"])).stdout).toBe("a".repeat(64) + "\n");
    const wrong = await coffer([...recover, "--format", "base32"]).catch((e) => e);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/--format.*base32.*Allowed choices are text, hex/s);
  });

  test("a wrong key says so and exits non-zero, printing no secret", async () => {
    const store = path.join(tempDir(), "escrow");
    const { recipients } = await keyFiles(1);
    await writeRecord(store, "p", 1, SECRET, recipients, 1);
    const stranger = generateKeyPairSync("x25519").privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    await fs.writeFile(path.join(tempDir(), "stranger.pem"), stranger);
    const error = await coffer([
      "escrow",
      "recover",
      "--store",
      store,
      "--id",
      "p",
      "--key",
      path.join(tempDir(), "stranger.pem"),
    ]).catch((e) => e);
    expect(error.code).toBe(1);
    expect(error.stderr).toMatch(/not one of this record's recipients \(r0\)/);
    expect(error.stdout).toBe("");
  });
});
