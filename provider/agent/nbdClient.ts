import * as net from "node:net";

/**
 * A small NBD client for the exports qemu-nbd serves on a unix socket: the fixed newstyle handshake,
 * NBD_OPT_GO, and reads with simple replies (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
 * It replaces `nbdcopy … - | hash`: reading in this process skips the pipe, which cost more than qemu-nbd's
 * decryption (2 GiB: 8.3 s through the pipe, 3.2 s to /dev/null), and it reads ranges, not only the whole export.
 */
export interface NbdExport {
  /** The export's size in bytes (a disk image's virtual size). */
  readonly size: number;
  /**
   * Reads `[offset, offset + length)` in requests of at most `requestBytes`, several in flight, and hands
   * the bytes to `onData` in order (as slices: copy what you keep).
   */
  readRange(offset: number, length: number, onData: (chunk: Buffer) => void, signal?: AbortSignal): Promise<void>;
  /** Says goodbye (NBD_CMD_DISC) and closes this end of the connection. */
  close(): Promise<void>;
}

export interface NbdOptions {
  /** Bytes per read request (qemu-nbd takes up to 32 MiB). */
  requestBytes?: number;
  /** Read requests in flight at once. */
  inFlight?: number;
}

const NBD_MAGIC = Buffer.from("NBDMAGIC");
const OPTION_MAGIC = 0x49484156454f5054n; // "IHAVEOPT"
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_DISC = 2;
const REPLY_ERROR_BIT = 0x80000000;

/** Bytes as they arrive on a socket, taken in exact amounts. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private queued = 0;
  private waiter?: { bytes: number; resolve: () => void; reject: (error: Error) => void };
  private failure?: Error;

  constructor(socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.queued += chunk.length;
      this.wake();
    });
    socket.on("error", (error) => this.fail(error));
    socket.on("close", () => this.fail(new Error("the NBD server closed the connection")));
  }

  fail(error: Error): void {
    this.failure ??= error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.failure);
  }

  private wake(): void {
    if (this.waiter && this.queued >= this.waiter.bytes) {
      const { resolve } = this.waiter;
      this.waiter = undefined;
      resolve();
    }
  }

  private async available(bytes: number): Promise<void> {
    if (this.queued >= bytes) return;
    if (this.failure) throw this.failure;
    await new Promise<void>((resolve, reject) => {
      this.waiter = { bytes, resolve, reject };
    });
  }

  /** The next `bytes` bytes as slices of what arrived (no copy). */
  async takeSlices(bytes: number): Promise<Buffer[]> {
    await this.available(bytes);
    const taken: Buffer[] = [];
    let wanted = bytes;
    while (wanted > 0) {
      const head = this.chunks[0];
      if (head.length <= wanted) {
        taken.push(head);
        this.chunks.shift();
        wanted -= head.length;
      } else {
        taken.push(head.subarray(0, wanted));
        this.chunks[0] = head.subarray(wanted);
        wanted = 0;
      }
    }
    this.queued -= bytes;
    return taken;
  }

  async take(bytes: number): Promise<Buffer> {
    const slices = await this.takeSlices(bytes);
    return slices.length === 1 ? slices[0] : Buffer.concat(slices);
  }
}

function optionRequest(option: number, data: Buffer): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(OPTION_MAGIC, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

function commandRequest(type: number, handle: bigint, offset: number, length: number): Buffer {
  const request = Buffer.alloc(28);
  request.writeUInt32BE(REQUEST_MAGIC, 0);
  request.writeUInt16BE(0, 4);
  request.writeUInt16BE(type, 6);
  request.writeBigUInt64BE(handle, 8);
  request.writeBigUInt64BE(BigInt(offset), 16);
  request.writeUInt32BE(length, 24);
  return request;
}

/** The handshake up to the transmission phase; returns the export's size. */
async function handshake(socket: net.Socket, queue: ByteQueue): Promise<number> {
  const greeting = await queue.take(18);
  if (!greeting.subarray(0, 8).equals(NBD_MAGIC) || greeting.readBigUInt64BE(8) !== OPTION_MAGIC) {
    throw new Error("the server is not an NBD server with the newstyle handshake");
  }
  const serverFlags = greeting.readUInt16BE(16);
  if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new Error("the NBD server lacks the fixed newstyle handshake");
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES));
  // GO on the default export (name ""), asking for no extra information.
  const go = Buffer.alloc(6);
  socket.write(Buffer.concat([clientFlags, optionRequest(OPT_GO, go)]));
  let size: number | undefined;
  for (;;) {
    const reply = await queue.take(20);
    if (reply.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error("the NBD server's option reply is malformed");
    const type = reply.readUInt32BE(12);
    const data = await queue.take(reply.readUInt32BE(16));
    if (type & REPLY_ERROR_BIT) {
      throw new Error(`the NBD server refused the export (${type & ~REPLY_ERROR_BIT}): ${data.toString("utf8")}`);
    }
    if (type === REP_INFO && data.length >= 12 && data.readUInt16BE(0) === INFO_EXPORT) {
      size = Number(data.readBigUInt64BE(2));
    }
    if (type === REP_ACK) break;
  }
  if (size === undefined) throw new Error("the NBD server did not say the export's size");
  return size;
}

/** Connects to the export that qemu-nbd serves on `socketPath`. */
export async function connectNbd(socketPath: string, options: NbdOptions = {}): Promise<NbdExport> {
  const requestBytes = options.requestBytes ?? 4 * 1024 * 1024;
  const inFlight = options.inFlight ?? 4;
  const socket = net.createConnection(socketPath);
  const queue = new ByteQueue(socket);
  let size: number;
  try {
    size = await handshake(socket, queue);
  } catch (error) {
    socket.destroy();
    throw error;
  }
  let nextHandle = 1n;

  async function readRange(offset: number, length: number, onData: (chunk: Buffer) => void, signal?: AbortSignal) {
    if (offset < 0 || length < 0 || offset + length > size) {
      throw new Error(`NBD read [${offset}, ${offset + length}) is outside the export's ${size} bytes`);
    }
    const onAbort = () => queue.fail(new Error("stopped before it finished"));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      signal?.throwIfAborted();
      // Requests by handle; replies may come in any order, and are handed on in the order of the range.
      const pending = new Map<bigint, { offset: number; length: number }>();
      const arrived = new Map<number, Buffer[]>();
      let sentUpTo = offset;
      let deliveredUpTo = offset;
      const send = () => {
        while (pending.size < inFlight && sentUpTo < offset + length) {
          const bytes = Math.min(requestBytes, offset + length - sentUpTo);
          const handle = nextHandle++;
          pending.set(handle, { offset: sentUpTo, length: bytes });
          socket.write(commandRequest(CMD_READ, handle, sentUpTo, bytes));
          sentUpTo += bytes;
        }
      };
      send();
      while (deliveredUpTo < offset + length) {
        if (signal?.aborted) throw new Error("stopped before it finished");
        const header = await queue.take(16);
        if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error("the NBD server's reply is malformed");
        const handle = header.readBigUInt64BE(8);
        const request = pending.get(handle);
        if (!request) throw new Error("the NBD server answered a request that was not made");
        pending.delete(handle);
        const errno = header.readUInt32BE(4);
        if (errno !== 0) throw new Error(`the NBD server failed to read at offset ${request.offset} (errno ${errno})`);
        arrived.set(request.offset, await queue.takeSlices(request.length));
        for (let slices = arrived.get(deliveredUpTo); slices; slices = arrived.get(deliveredUpTo)) {
          arrived.delete(deliveredUpTo);
          for (const slice of slices) {
            onData(slice);
            deliveredUpTo += slice.length;
          }
        }
        send();
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  return {
    size,
    readRange,
    async close() {
      // The server closes its end on DISC; a server that hangs must not keep this process alive.
      if (!socket.destroyed) socket.end(commandRequest(CMD_DISC, nextHandle++, 0, 0));
      socket.unref();
    },
  };
}
