import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";

/** A marker no random data contains by chance; a backup that holds it holds plaintext guest data. */
export const PLAINTEXT_MARKER = "COFFER-PLAINTEXT-MARKER-4f1d9a7c";

/**
 * A raw disk of `mib` MiB laid out like a real one, per 4 MiB: random data, repetitive log text
 * carrying the plaintext marker, random data, zeros (written out, not holes).
 */
export async function makeRawDisk(file: string, mib: number): Promise<void> {
  const chunk = 1024 * 1024;
  const text = Buffer.alloc(chunk);
  const line = Buffer.from(`2026-11-24T03:00:00Z web-1 nginx: GET /healthz 200 ${PLAINTEXT_MARKER}\n`);
  for (let offset = 0; offset < chunk; offset += line.length) line.copy(text, offset);
  const handle = await fs.open(file, "w");
  try {
    for (let i = 0; i < mib; i++) {
      const kind = i % 4;
      await handle.write(kind === 1 ? text : kind === 3 ? Buffer.alloc(chunk) : randomBytes(chunk));
    }
  } finally {
    await handle.close();
  }
}
