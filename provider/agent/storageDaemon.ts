import * as path from "node:path";
import { CofferError } from "../common/errors";
import { SourceLayout, sourceImageOpts } from "./image";
import { QmpClient, SourceNode, findNamedNode } from "./qmp";
import { withPrivateDir } from "./tempFiles";
import { start } from "./tools";

const NODE = "coffer-source";
/** How long a daemon asked to quit may take to save its bitmaps and close the disk. */
const QUIT_TIMEOUT_MS = 30_000;
/** How long a daemon may take to open the disk and answer on its socket. */
const START_TIMEOUT_MS = 15_000;

/**
 * Runs `work` with a stopped VM's qcow2 disk opened by qemu-storage-daemon: what only a QEMU does
 * on a disk (a copy in one transaction with a new dirty bitmap, a copy of what a bitmap marks)
 * without a VM. The disk is opened read-write, since its bitmaps live in its header; QEMU's lock
 * refuses it while a VM has it open. The daemon is asked to quit whatever happens, which saves
 * the bitmaps into the disk; killed instead (this process killed: pdeathsig), it leaves them
 * marked in use, and the next point is a full one.
 */
export async function withStorageDaemon<T>(
  layout: SourceLayout,
  subject: string,
  signal: AbortSignal | undefined,
  work: (qmp: QmpClient, source: SourceNode) => Promise<T>,
): Promise<T> {
  return withPrivateDir("qsd", async (dir) => {
    const socket = path.join(dir, "qmp.sock");
    const daemon = await start(
      "qemu-storage-daemon",
      [
        "--blockdev",
        `node-name=${NODE},${sourceImageOpts(layout)}`,
        "--chardev",
        `socket,id=qmp,path=${socket},server=on,wait=off`,
        "--monitor",
        "chardev=qmp",
      ],
      { subject, discardStdout: true },
    );
    let exited = false;
    daemon.finished.then(
      () => (exited = true),
      () => (exited = true),
    );
    try {
      // The socket exists once bound, a moment before it listens: connect until it answers.
      const until = Date.now() + START_TIMEOUT_MS;
      let qmp: QmpClient | undefined;
      while (!qmp) {
        if (exited) {
          const reason = (await daemon.stderr) || "no output";
          throw new CofferError("QEMU_FAILED", `${subject}: qemu-storage-daemon could not open the disk: ${reason}`);
        }
        if (signal?.aborted) throw new CofferError("ABORTED", `${subject}: stopped before it finished`);
        if (Date.now() > until) {
          throw new CofferError("QEMU_FAILED", `${subject}: qemu-storage-daemon did not answer within 15 s`);
        }
        qmp = await QmpClient.connect(socket, subject).catch(() => undefined);
        if (!qmp) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      try {
        return await work(qmp, await findNamedNode(qmp, NODE, subject));
      } finally {
        await qmp.execute("quit").catch(() => undefined);
        qmp.close();
        let timer: NodeJS.Timeout | undefined;
        const quitting = new Promise((resolve) => (timer = setTimeout(resolve, QUIT_TIMEOUT_MS)));
        await Promise.race([daemon.finished.catch(() => undefined), quitting]);
        // A pending timer would keep the agent's process alive after its reply.
        clearTimeout(timer);
      }
    } finally {
      daemon.stop();
      await daemon.finished.catch(() => undefined);
    }
  });
}
