/**
 * The SecretEscrow implementation that the serialized provider shim loads with
 * `require("coffer/provider/escrow")`. Everything here runs in Pulumi's provider process.
 */
import { localHost as policyHost } from "../backupPolicy";
import { settlingBeforeExit, watchEngine } from "../common/engineWatch";
import { directoryStore } from "../targets/directory";
import { EscrowHost, createSecretEscrowProvider } from "./provider";

watchEngine();

export const localHost: EscrowHost = {
  assertDirectory: policyHost.assertDirectory,
  store: (location) => directoryStore(location.path),
  now: () => new Date(),
};

/** The object the serialized shim delegates to (see sdk/delegatingProvider.ts). */
export const provider = settlingBeforeExit(createSecretEscrowProvider(localHost));
