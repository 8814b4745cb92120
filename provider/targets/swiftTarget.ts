import * as path from "node:path";
import { z } from "zod";
import { SwiftStore, tempAuth } from "./swift";

/**
 * A backup target in an OpenStack Swift container, as a BackupPolicy declares it: where the account is,
 * the container, and the agents' local scratch folder (the spool a point passes through on its way in and out).
 * The key is not here: it is a secret, kept apart (the policy's `targetKey`, the set's `keys.targetKey`,
 * agent requests on stdin).
 */
export const DEFAULT_SCRATCH_PATH = "/var/tmp/coffer-scratch";
/** The most one item's spool file may grow to, by default. */
export const DEFAULT_SCRATCH_MAX_GIB = 64;
export const DEFAULT_SEGMENT_MIB = 64;

const NO_OBJECT_LOCK =
  "target.immutable: Swift has no object lock (no WORM retention: whoever holds the account's key can delete " +
  "any object, and X-Delete-At or versioned containers don't prevent it), so Coffer can't make points on Swift " +
  "immutable. Remove immutable (or set it to false); for backups nobody can delete, use a directory target on " +
  "storage with a retention lock (a WORM NAS share or snapshots), or a second copy in another account";

const absolute = (field: string) =>
  z
    .string({ error: `${field} must be an absolute folder on the agents' hosts, e.g. "${DEFAULT_SCRATCH_PATH}"` })
    .refine((p) => path.isAbsolute(p) && !p.split("/").includes(".."), {
      message: `${field} must be an absolute folder (starting with /, without ".."), e.g. "${DEFAULT_SCRATCH_PATH}"`,
    })
    .transform((p) => path.normalize(p).replace(/(.)\/+$/, "$1"))
    .refine((p) => p !== "/", { message: `${field} must be a folder of its own, not /` });

export const swiftTargetSchema = z
  .object({
    kind: z.literal("swift"),
    authUrl: z
      .string({ error: 'target.authUrl is required: the tempauth URL, e.g. "https://swift.example:8080/auth/v1.0"' })
      .refine((u) => URL.canParse(u) && /^https?:$/.test(new URL(u).protocol), {
        message: 'target.authUrl must be an http(s) URL, e.g. "https://swift.example:8080/auth/v1.0"',
      })
      .refine((u) => !/\/v(2\.0|3)\/?$/.test(u), {
        message:
          "target.authUrl is a Keystone URL: Coffer's Swift target speaks tempauth (…/auth/v1.0) so far; " +
          "give the cluster's tempauth URL, or use a directory target",
      }),
    user: z
      .string({ error: 'target.user is required: the tempauth user as "account:user", e.g. "backup:coffer"' })
      .regex(/^[^:\s]+:[^:\s]+$/, { message: 'target.user must be "account:user", e.g. "backup:coffer"' }),
    container: z
      .string({ error: 'target.container is required: the Swift container of the backups, e.g. "coffer-backups"' })
      .regex(/^[^/]{1,200}$/, { message: "target.container must be 1-200 characters without '/'" }),
    /** A folder of keys in the container ("" or absent: all of it). */
    prefix: z
      .string({ error: 'target.prefix must be a folder in the container, e.g. "zone-a"' })
      .refine((p) => p === "" || p.split("/").every((n) => n !== "" && n !== "." && n !== ".."), {
        message: "target.prefix must be names separated by '/', without '.', '..', or a leading or trailing '/'",
      })
      .optional(),
    /** Objects larger than this are stored as Static Large Objects of segments this big, uploaded in parallel. */
    segmentMiB: z
      .number({ error: `target.segmentMiB must be a whole number of MiB, e.g. ${DEFAULT_SEGMENT_MIB}` })
      .int({ message: "target.segmentMiB must be a whole number of MiB" })
      .min(1, { message: "target.segmentMiB must be 1 or more" })
      .max(5120, { message: "target.segmentMiB must be at most 5120 (Swift's largest object is 5 GiB)" })
      .default(DEFAULT_SEGMENT_MIB),
    /** The agents' local spool: each item is written here, uploaded, and removed. */
    scratch: z
      .object(
        {
          path: absolute("target.scratch.path").default(DEFAULT_SCRATCH_PATH),
          maxGiB: z
            .number({ error: "target.scratch.maxGiB must be a number of GiB, e.g. 64" })
            .positive({ message: "target.scratch.maxGiB must be more than 0" })
            .default(DEFAULT_SCRATCH_MAX_GIB),
        },
        { error: 'target.scratch must be an object like { path: "/var/tmp/coffer-scratch", maxGiB: 64 }' },
      )
      .strict()
      .default({ path: DEFAULT_SCRATCH_PATH, maxGiB: DEFAULT_SCRATCH_MAX_GIB }),
    /** Refused when true: Swift has no object lock. */
    immutable: z
      .boolean({ error: "target.immutable must be true or false" })
      .refine((on) => !on, { message: NO_OBJECT_LOCK })
      .optional(),
  })
  .strict();

export type SwiftTarget = z.output<typeof swiftTargetSchema>;

/** What the agent needs to reach a Swift target: the target and its key (agent requests carry it on stdin only). */
export type SwiftTargetAccess = Omit<SwiftTarget, "kind" | "immutable"> & { key: string };

/** The store of a Swift target. */
export function swiftTargetStore(access: SwiftTargetAccess): SwiftStore {
  return new SwiftStore({
    auth: tempAuth({ authUrl: access.authUrl, user: access.user, key: access.key }),
    container: access.container,
    ...(access.prefix ? { prefix: access.prefix } : {}),
    segmentBytes: access.segmentMiB * 1024 * 1024,
  });
}

/** The agent's access to `target` with `key`; the fields a request carries, no more. */
export function swiftAccessOf(target: SwiftTarget, key: string): SwiftTargetAccess {
  const { kind: _kind, immutable: _immutable, ...access } = target;
  return { ...access, key };
}

/**
 * Where a target's backups pass through on an agent's host: a directory target's own folder (QEMU writes in
 * place), a Swift target's scratch folder (a spool laid out as the container is).
 */
export function localRootOf(target: { kind: "directory"; path: string } | SwiftTarget): string {
  return target.kind === "swift" ? target.scratch.path : target.path;
}
