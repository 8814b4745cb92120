/**
 * The EncryptedBackupSet implementation that the serialized provider shim loads with
 * `require("coffer/provider/backupSet")`. Everything here runs in Pulumi's provider process.
 */
import { randomBytes } from "node:crypto";
import { agentClient } from "./agentClient";
import { engineLog } from "../common/engineLog";
import { engineGone, settlingBeforeExit, watchEngine } from "../common/engineWatch";
import { cloudDeps, openCloudFrom } from "../openstack";
import { SetHost, createBackupSetProvider } from "./provider";
import { CloudAccess, cloudAccessOf } from "./take";
import { newPointId } from "./state";

watchEngine();

/** The stack's config, as the engine's `configure` gave it: `openstack:*` keys for cloud sources. */
let stackConfig: ((key: string) => string | undefined) | undefined;
let cloudAccess: Promise<CloudAccess> | undefined;

/** Signs in to the cloud on first use (stack config, then OS_* variables, then clouds.yaml), once per process. */
function openCloudAccess(): Promise<CloudAccess> {
  cloudAccess ??= (async () => {
    const deps = cloudDeps({ log: (line) => engineLog(line) });
    return cloudAccessOf(await openCloudFrom({ stack: stackConfig, env: process.env }, deps), deps);
  })();
  // A failed sign-in is not kept: the next call tries again (and says why again).
  cloudAccess.catch(() => (cloudAccess = undefined));
  return cloudAccess;
}

export const localHost: SetHost = {
  agent: agentClient,
  cloud: openCloudAccess,
  newSetId: (trigger) =>
    `${
      trigger
        .replace(/[^A-Za-z0-9._-]+/g, "-")
        .replace(/^[-.]+/, "")
        .slice(0, 40) || "set"
    }-${randomBytes(4).toString("hex")}`,
  newPointId: (now) => newPointId(now, randomBytes(2).toString("hex")),
  now: () => new Date(),
  progress: (message) => engineLog(message),
  note: (message) => engineLog(message, { ephemeral: false }),
  engineGone,
};

/**
 * The object the serialized shim delegates to (see sdk/delegatingProvider.ts). A create stopped
 * by the engine's exit removes what it made before the process exits.
 */
export const provider = {
  ...settlingBeforeExit(createBackupSetProvider(localHost)),
  async configure(req: { config: { get(key: string): string | undefined } }): Promise<void> {
    stackConfig = (key) => req.config.get(key);
    cloudAccess = undefined;
  },
};
