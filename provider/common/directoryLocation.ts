import * as path from "node:path";
import { z } from "zod";

/** `{ kind: "directory", path }`: an absolute folder, normalized; `field` names it in every message. */
export const directoryLocation = (field: string, example: string) =>
  z
    .object(
      {
        kind: z.literal("directory", { error: `${field}.kind must be "directory" (the only kind so far): a mounted NAS path or local folder` }),
        path: z
          .string({ error: `${field}.path is required: set it to an absolute folder, e.g. "${example}"` })
          .refine((p) => path.isAbsolute(p), { message: `${field}.path must be absolute (start with /): relative paths depend on where pulumi runs` })
          .refine((p) => !p.split("/").includes(".."), { message: `${field}.path must not contain ".." segments: give the real absolute path` })
          .transform((p) => path.normalize(p).replace(/(.)\/+$/, "$1")),
      },
      { error: `${field} is required: set it to { kind: "directory", path: "${example}" }` },
    )
    .strict();
