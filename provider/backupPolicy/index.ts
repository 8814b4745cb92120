/**
 * The BackupPolicy implementation that the serialized provider shim loads with
 * `require("coffer/provider/backupPolicy")`. Everything here runs in Pulumi's provider process.
 */
import { randomBytes } from "node:crypto";
import { constants, promises as fs } from "node:fs";
import { settlingBeforeExit, watchEngine } from "../common/engineWatch";
import { CofferError } from "../common/errors";
import { directoryStore } from "../targets/directory";
import { swiftAccessOf, swiftTargetStore } from "../targets/swiftTarget";
import { PolicyHost, createBackupPolicyProvider } from "./provider";

watchEngine();

export const localHost: PolicyHost = {
  async assertDirectory(dir) {
    const stat = await fs.stat(dir);
    if (!stat.isDirectory()) throw new Error(`${dir} is not a directory`);
    await fs.access(dir, constants.W_OK);
  },
  realPath: (dir) => fs.realpath(dir),
  store(target, key) {
    if (target.kind === "directory") return directoryStore(target.path);
    if (key === undefined) throw new CofferError("INVALID_INPUT", "target.key is required for a Swift target");
    return swiftTargetStore(swiftAccessOf(target, key));
  },
  randomKey: () => randomBytes(32).toString("base64"),
  newId: (zone) => `${zone}-${randomBytes(6).toString("hex")}`,
  now: () => new Date(),
};

/** The object the serialized shim delegates to (see sdk/delegatingProvider.ts). */
export const provider = settlingBeforeExit(createBackupPolicyProvider(localHost));
