import { ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { connectNbd } from "../../provider/agent/nbdClient";
import { pollFor } from "../support/processes";
import { useTempDir } from "../support/tempDir";

/** The agent's NBD client against Debian's qemu-nbd (-t: for several clients), serving a file the test wrote. */
jest.setTimeout(60_000);
const tempDir = useTempDir();
let server: ChildProcess | undefined;
afterEach(() => server?.kill("SIGKILL"));

async function serve(bytes: Buffer): Promise<string> {
  const file = path.join(tempDir(), "disk.raw");
  await fs.writeFile(file, bytes);
  const socket = path.join(tempDir(), "nbd.sock");
  const pidFile = path.join(tempDir(), "qemu-nbd.pid");
  server = spawn("qemu-nbd", ["-r", "-t", "-f", "raw", "-k", socket, `--pid-file=${pidFile}`, file], {
    stdio: "ignore",
  });
  const listening = await pollFor(
    () =>
      fs.access(pidFile).then(
        () => true,
        () => undefined,
      ),
    20_000,
  );
  if (!listening) throw new Error("qemu-nbd did not start");
  return socket;
}

async function readAll(socket: string, offset: number, length: number, options = {}): Promise<Buffer> {
  const image = await connectNbd(socket, options);
  const chunks: Buffer[] = [];
  try {
    await image.readRange(offset, length, (chunk) => chunks.push(Buffer.from(chunk)));
  } finally {
    await image.close();
  }
  return Buffer.concat(chunks);
}

test("reads the whole export in order, with small requests and many in flight", async () => {
  const bytes = randomBytes(5 * 1024 * 1024 + 4096);
  const socket = await serve(bytes);
  const image = await connectNbd(socket);
  expect(image.size).toBe(bytes.length);
  await image.close();
  // 64 KiB requests, 16 at a time (qemu-nbd may answer them in any order): the bytes still come in order.
  expect((await readAll(socket, 0, bytes.length, { requestBytes: 65536, inFlight: 16 })).equals(bytes)).toBe(true);
  expect((await readAll(socket, 0, bytes.length)).equals(bytes)).toBe(true);
});

test("reads a range that starts and ends inside requests", async () => {
  const bytes = randomBytes(3 * 1024 * 1024);
  const socket = await serve(bytes);
  const [offset, length] = [1_000_000 + 512, 1_500_000];
  const read = await readAll(socket, offset, length, { requestBytes: 300_000, inFlight: 3 });
  expect(read.equals(bytes.subarray(offset, offset + length))).toBe(true);
});

test("refuses a range beyond the export, and fails when the server goes mid-read", async () => {
  const bytes = randomBytes(64 * 1024 * 1024);
  const socket = await serve(bytes);
  const image = await connectNbd(socket, { requestBytes: 65536, inFlight: 1 });
  await expect(image.readRange(bytes.length - 10, 20, () => undefined)).rejects.toThrow(/outside the export/);
  let read = 0;
  const reading = image.readRange(0, bytes.length, (chunk) => {
    read += chunk.length;
    if (read >= 1024 * 1024) server!.kill("SIGKILL");
  });
  await expect(reading).rejects.toThrow(/closed the connection|ECONNRESET|EPIPE/);
  expect(read).toBeLessThan(bytes.length);
  await image.close();
});

test("an abort stops the read", async () => {
  const bytes = randomBytes(32 * 1024 * 1024);
  const socket = await serve(bytes);
  const image = await connectNbd(socket, { requestBytes: 65536, inFlight: 1 });
  const controller = new AbortController();
  let read = 0;
  const reading = image.readRange(
    0,
    bytes.length,
    (chunk) => {
      read += chunk.length;
      if (read >= 1024 * 1024) controller.abort();
    },
    controller.signal,
  );
  await expect(reading).rejects.toThrow(/stopped before it finished/);
  expect(read).toBeLessThan(bytes.length);
  await image.close();
});
