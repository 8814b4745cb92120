import { z } from "zod";

/** Nova v2.1 response bodies (fields Coffer reads; others dropped), for microversions 2.1 to 2.93. */
const links = z.array(z.object({ rel: z.string(), href: z.string() })).nullish();

/** Before 2.47 a server names its flavor by id; from 2.47 it embeds the flavor's values and no id. */
const serverFlavor = z.object({
  id: z.string().nullish(),
  original_name: z.string().nullish(),
  vcpus: z.number().nullish(),
  ram: z.number().nullish(),
  disk: z.number().nullish(),
  ephemeral: z.number().nullish(),
  swap: z.number().nullish(),
  extra_specs: z.record(z.string(), z.string()).nullish(),
});

/** Nova sends "" (not null) as the image of a server booted from a volume. */
const serverImage = z.union([z.object({ id: z.string() }).transform((image) => image.id), z.literal("")]).nullish();

const address = z.object({
  addr: z.string(),
  version: z.number().nullish(),
  "OS-EXT-IPS:type": z.string().nullish(),
  "OS-EXT-IPS-MAC:mac_addr": z.string().nullish(),
});

export const serverSchema = z.object({
  id: z.string(),
  name: z.string(),
  status: z.string(),
  tenant_id: z.string().nullish(),
  user_id: z.string().nullish(),
  flavor: serverFlavor,
  /** The image id, or "" for a server booted from a volume. */
  image: serverImage,
  metadata: z.record(z.string(), z.string()).nullish(),
  key_name: z.string().nullish(),
  /** Absent for a server without ports (networks "none"). */
  security_groups: z.array(z.object({ name: z.string() })).nullish(),
  addresses: z.record(z.string(), z.array(address)).nullish(),
  "os-extended-volumes:volumes_attached": z
    .array(z.object({ id: z.string(), delete_on_termination: z.boolean().nullish() }))
    .nullish(),
  /** Base64 of what the server was created with: for admins only, microversion >= 2.3. */
  "OS-EXT-SRV-ATTR:user_data": z.string().nullish(),
  /** The root disk's device ("/dev/vda"): for admins only. */
  "OS-EXT-SRV-ATTR:root_device_name": z.string().nullish(),
  "OS-EXT-STS:vm_state": z.string().nullish(),
  "OS-EXT-STS:task_state": z.string().nullish(),
  "OS-EXT-AZ:availability_zone": z.string().nullish(),
  fault: z.object({ message: z.string().nullish(), code: z.number().nullish() }).nullish(),
  created: z.string(),
  updated: z.string().nullish(),
});
export type Server = z.infer<typeof serverSchema>;

export const serverBody = z.object({ server: serverSchema });
export const serverPage = z.object({ servers: z.array(serverSchema), servers_links: links });
export const serverCreated = z.object({ server: z.object({ id: z.string() }) });

/** Microversion 2.45 and later: createImage answers with the image id in the body. */
export const createImageBody = z.object({ image_id: z.string() });

export const volumeAttachmentSchema = z.object({
  /** The attachment's id: the volume id before 2.89. */
  id: z.string().nullish(),
  volumeId: z.string(),
  serverId: z.string(),
  device: z.string().nullish(),
  tag: z.string().nullish(),
  /** Microversion 2.79. */
  delete_on_termination: z.boolean().nullish(),
  /** Microversion 2.89: Cinder's attachment id and the block device mapping's uuid. */
  attachment_id: z.string().nullish(),
  bdm_uuid: z.string().nullish(),
});
export type VolumeAttachment = z.infer<typeof volumeAttachmentSchema>;
export const volumeAttachmentList = z.object({ volumeAttachments: z.array(volumeAttachmentSchema) });

export const flavorSchema = z.object({
  id: z.string(),
  name: z.string(),
  vcpus: z.number(),
  ram: z.number(),
  disk: z.number(),
});
export type Flavor = z.infer<typeof flavorSchema>;
export const flavorList = z.object({ flavors: z.array(flavorSchema) });

export const anyBody = z.unknown();
