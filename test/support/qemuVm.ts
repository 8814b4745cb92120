import { ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import * as path from "node:path";

/** Whether a unix socket accepts a connection (closed again at once). */
function accepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

export interface RunningVm {
  qmpSocket: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/**
 * A real QEMU with `disk` attached as virtio-blk "vda": TCG, no kernel, so the disk's content stays
 * what the test wrote while block jobs run against it; paused (-S) unless `running` (its firmware
 * then runs, finds nothing to boot, and waits).
 */
export async function startVm(
  dir: string,
  disk: string,
  format: "raw" | "qcow2" = "raw",
  options: { running?: boolean } = {},
): Promise<RunningVm> {
  const qmpSocket = path.join(dir, `qmp-${path.basename(disk)}.sock`);
  const child = spawn(
    "qemu-system-x86_64",
    [
      "-machine",
      "q35,accel=tcg",
      "-nodefaults",
      "-display",
      "none",
      ...(options.running ? [] : ["-S"]),
      "-m",
      "64",
      "-qmp",
      `unix:${qmpSocket},server=on,wait=off`,
      "-blockdev",
      `driver=file,filename=${disk},node-name=disk0-file`,
      "-blockdev",
      `driver=${format},file=disk0-file,node-name=disk0`,
      "-device",
      "virtio-blk-pci,drive=disk0,id=vda",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (c) => (stderr += c));
  const until = Date.now() + 20_000;
  // The socket file appears when QEMU binds it, a moment before it listens: wait for a connection.
  while (!existsSync(qmpSocket) || !(await accepts(qmpSocket))) {
    if (child.exitCode !== null) throw new Error(`QEMU exited: ${stderr}`);
    if (Date.now() > until) throw new Error(`QEMU did not open its QMP socket: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    qmpSocket,
    process: child,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
    },
  };
}
