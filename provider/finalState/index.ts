/**
 * The FinalStateBackup implementation that the serialized provider shim loads with
 * `require("coffer/provider/finalState")`. It takes points as EncryptedBackupSet does, with the same
 * agents and cloud sign-in (one per provider process).
 */
import { localHost, provider as backupSetProvider } from "../backupSet";
import { settlingBeforeExit } from "../common/engineWatch";
import { createFinalStateProvider } from "./provider";

export const provider = {
  ...settlingBeforeExit(createFinalStateProvider(localHost)),
  configure: backupSetProvider.configure,
};
