/**
 * The RestoreDrill implementation that the serialized provider shim loads with
 * `require("coffer/provider/restoreDrill")`. Everything here runs in Pulumi's provider process;
 * the drills themselves run in the agent on the machine that holds each point.
 */
import { agentClient } from "../backupSet/agentClient";
import { cloudSignIn } from "../backupSet/cloudSignIn";
import { engineLog } from "../common/engineLog";
import { engineGone, settlingBeforeExit, watchEngine } from "../common/engineWatch";
import { DrillDeps, createRestoreDrillProvider } from "./provider";

watchEngine();

const signIn = cloudSignIn();

export const localHost: DrillDeps = {
  agent: agentClient,
  now: () => new Date(),
  random: Math.random,
  cloud: signIn.open,
  progress: (message) => engineLog(message),
  engineGone,
};

/** The object the serialized shim delegates to (see sdk/delegatingProvider.ts). */
export const provider = {
  ...settlingBeforeExit(createRestoreDrillProvider(localHost)),
  async configure(req: { config: { get(key: string): string | undefined } }): Promise<void> {
    signIn.configure(req);
  },
};
