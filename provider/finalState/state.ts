import { currentState } from "../common/check";
import type { FinalStateInputs } from "./schema";

/** Bumped when the shape of state changes; readers accept every older one. */
export const FINAL_STATE_SCHEMA_VERSION = 1;

/** A FinalStateBackup's outputs: its inputs, and the set its final point will go into. Enough for `delete` alone. */
export interface FinalStateOutputs extends FinalStateInputs {
  schemaVersion: number;
  /** The set folder (under the policy's target and zone) that the final point goes into. */
  setId: string;
  /** The target's identity when the backup was armed: a different disk mounted there is refused. */
  targetId: string;
  /** When it was created: from then on, deleting the VM takes a final point first. */
  armedAt: string;
}

export function upgradeFinalState(stored: FinalStateOutputs & { __provider?: unknown }): FinalStateOutputs {
  return currentState("FinalStateBackup", FINAL_STATE_SCHEMA_VERSION, stored);
}
