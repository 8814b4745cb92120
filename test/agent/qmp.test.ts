import * as path from "node:path";
import { QmpClient } from "../../provider/agent/qmp";
import { startVm } from "../support/qemuVm";
import { makeRawDisk } from "../support/disks";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(60_000);
const tempDir = useTempDir();

test("a QEMU killed while commands are in flight is reported as gone, however the socket ends", async () => {
  const disk = path.join(tempDir(), "vm.raw");
  await makeRawDisk(disk, 4);
  const vm = await startVm(tempDir(), disk);
  const qmp = await QmpClient.connect(vm.qmpSocket, "source db-1-vda");
  // Keep commands in flight so the kill lands mid-conversation (the socket resets before closing).
  const flood = (async () => {
    for (;;) await qmp.execute("query-status");
  })();
  setTimeout(() => vm.process.kill("SIGKILL"), 200);
  await expect(flood).rejects.toMatchObject({
    code: "QEMU_FAILED",
    message: "source db-1-vda: QEMU closed its QMP socket (did the VM stop or crash?)",
  });
  await vm.stop();
});
