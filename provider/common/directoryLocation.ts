import * as path from "node:path";
import { z } from "zod";

/** System folders: refused with everything under them. */
const SYSTEM_TREES = [
  "/bin",
  "/boot",
  "/dev",
  "/etc",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/proc",
  "/run",
  "/sbin",
  "/sys",
  "/usr",
];
/** Folders that hold other things: refused themselves, while a folder of one's own under them is fine. */
const SHARED_ROOTS = ["/", "/home", "/mnt", "/media", "/opt", "/root", "/srv", "/tmp", "/var"];

/** Whether `dir` (absolute, normalized) is `/` or a system folder, where Coffer must never write. */
export function isSystemFolder(dir: string): boolean {
  return SHARED_ROOTS.includes(dir) || SYSTEM_TREES.some((tree) => dir === tree || dir.startsWith(tree + "/"));
}

export const systemFolderProblem = (field: string, example: string) =>
  `${field}.path must be a dedicated backup folder such as ${example} (a NAS mount), not / or a system folder`;

/** `{ kind: "directory", path }`: an absolute folder, normalized; `field` names it in every message. */
export const directoryLocation = (field: string, example: string) =>
  z
    .object(
      {
        kind: z.literal("directory", {
          error: `${field}.kind must be "directory" (the only kind so far): a mounted NAS path or local folder`,
        }),
        path: z
          .string({ error: `${field}.path is required: set it to an absolute folder, e.g. "${example}"` })
          .refine((p) => path.isAbsolute(p), {
            message: `${field}.path must be absolute (start with /): relative paths depend on where pulumi runs`,
          })
          .refine((p) => !p.split("/").includes(".."), {
            message: `${field}.path must not contain ".." segments: give the real absolute path`,
          })
          .transform((p) => path.normalize(p).replace(/(.)\/+$/, "$1"))
          .refine((p) => !isSystemFolder(p), { message: systemFolderProblem(field, example) }),
      },
      { error: `${field} is required: set it to { kind: "directory", path: "${example}" }` },
    )
    .strict();
