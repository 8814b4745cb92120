/** Files staged on this machine on their way into the target: how they are removed. */
import { promises as fs } from "node:fs";

const ZEROS = Buffer.alloc(1024 * 1024);

/**
 * Removes staged `file` (gone already: nothing to do). With `scrub`, its bytes are first overwritten
 * with zeros over its whole length and synced, so a disk's data does not outlive the transfer in
 * free blocks (on a filesystem that writes in place).
 */
export async function removeStaged(file: string, scrub = false): Promise<void> {
  if (scrub) {
    const handle = await fs.open(file, "r+").catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return undefined;
      throw error;
    });
    if (handle) {
      try {
        const { size } = await handle.stat();
        for (let at = 0; at < size; at += ZEROS.length) {
          await handle.write(ZEROS, 0, Math.min(ZEROS.length, size - at), at);
        }
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  }
  await fs.rm(file, { force: true });
}
