/**
 * The EncryptedBackupSet implementation that the serialized provider shim loads with
 * `require("coffer/provider/backupSet")`. Everything here runs in Pulumi's provider process.
 */
import { randomBytes } from "node:crypto";
import { agentClient } from "./agentClient";
import { engineLog } from "../common/engineLog";
import { engineGone, settlingBeforeExit, watchEngine } from "../common/engineWatch";
import { SetHost, createBackupSetProvider } from "./provider";
import { cloudSignIn } from "./cloudSignIn";
import { newPointId } from "./state";

watchEngine();

const signIn = cloudSignIn();

export const localHost: SetHost = {
  agent: agentClient,
  cloud: signIn.open,
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
    signIn.configure(req);
  },
};
