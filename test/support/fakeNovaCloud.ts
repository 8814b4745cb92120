/**
 * A stateful fake of the Nova, Cinder and Glance calls a server's backup makes, on FakeCloud's
 * scripted fetch: servers and their attachments, createImage, Cinder snapshots, volumes from
 * snapshots, uploads to images, image downloads with Glance's hashes, and deletes. It records what
 * exists, so a test can tell what a take left behind; `failAt` makes one step fail.
 */
import { createHash } from "node:crypto";
import { FakeCloud, cinderError, projectId, type SeenRequest } from "./fakeOpenStack";

export interface FakeDisk {
  id: string;
  device: string;
  bytes: Buffer;
  sizeGiB?: number;
  encrypted?: boolean;
}

export type FakeStep =
  "createImage" | "snapshot" | "volume" | "upload" | "download" | "imageKilled" | "createServer" | "attach";

interface FakeImage {
  id: string;
  name: string;
  status: string;
  diskFormat: string;
  bytes: Buffer;
  properties: Record<string, string>;
  polls: number;
}

const created = "2026-11-26T12:00:00Z";
const notFound = (what: string) => cinderError("itemNotFound", 404, `${what} could not be found.`);

export class FakeNovaCloud {
  readonly fake = new FakeCloud();
  readonly images = new Map<string, FakeImage>();
  readonly snapshots = new Map<string, { id: string; volumeId: string; status: string }>();
  /** Every volume: the server's attached ones and temporary ones made from snapshots. */
  readonly volumes = new Map<string, { id: string; size: number; bytes: Buffer; status: string; name?: string }>();
  /** What was created, in order ("image i-1", "snapshot s-1", "volume v-t1"). */
  readonly made: string[] = [];
  /** Servers a restore created: their create request's body, and the volumes attached to them. */
  readonly created = new Map<string, { request: Record<string, unknown>; attached: string[] }>();
  failAt?: FakeStep;
  private next = 0;

  constructor(
    readonly server: { id: string; image?: string; root?: Buffer; rootFormat?: string; extra?: object },
    readonly disks: FakeDisk[] = [],
  ) {
    for (const disk of disks) {
      this.volumes.set(disk.id, { id: disk.id, size: disk.sizeGiB ?? 1, bytes: disk.bytes, status: "in-use" });
    }
    this.routes();
  }

  /** What is left in the cloud that the server did not have before: images, snapshots, volumes, servers. */
  leftovers(): string[] {
    const attached = new Set(this.disks.map((d) => d.id));
    return [
      ...[...this.created.keys()].map((id) => `server ${id}`),
      ...[...this.images.keys()].map((id) => `image ${id}`),
      ...[...this.snapshots.keys()].map((id) => `snapshot ${id}`),
      ...[...this.volumes.keys()].filter((id) => !attached.has(id)).map((id) => `volume ${id}`),
    ];
  }

  private id(prefix: string) {
    return `${prefix}-${++this.next}`;
  }

  private addImage(name: string, bytes: Buffer, diskFormat: string, properties: Record<string, string> = {}) {
    const image = { id: this.id("img"), name, status: "saving", diskFormat, bytes, properties, polls: 0 };
    this.images.set(image.id, image);
    this.made.push(`image ${image.id}`);
    return image;
  }

  private imageJson(image: FakeImage) {
    const done = image.status === "active";
    return {
      id: image.id,
      name: image.name,
      status: image.status,
      disk_format: image.diskFormat,
      container_format: "bare",
      visibility: "private",
      size: done ? image.bytes.length : null,
      checksum: done ? createHash("md5").update(image.bytes).digest("hex") : null,
      os_hash_algo: done ? "sha512" : null,
      os_hash_value: done ? createHash("sha512").update(image.bytes).digest("hex") : null,
      owner: projectId,
      tags: [],
      created_at: created,
      ...image.properties,
    };
  }

  private volumeJson(id: string) {
    const volume = this.volumes.get(id)!;
    const disk = this.disks.find((d) => d.id === id);
    return {
      volume: {
        id,
        name: volume.name ?? `vol-${id}`,
        status: volume.status,
        size: volume.size,
        volume_type: "lvmdriver-1",
        bootable: "false",
        encrypted: disk?.encrypted ?? false,
        metadata: disk ? { role: "data" } : {},
        created_at: created,
      },
    };
  }

  private routes() {
    const { fake, server } = this;
    const body = (req: SeenRequest) => JSON.parse(req.body as string);
    this.restoreRoutes(body);
    fake.on("GET", new RegExp(`/servers/${server.id}$`), () => ({
      json: {
        server: {
          id: server.id,
          name: "web-1",
          status: "ACTIVE",
          tenant_id: projectId,
          flavor: { vcpus: 1, ram: 64, disk: 1, ephemeral: 0, swap: 0, original_name: "coffer.tiny", extra_specs: {} },
          image: server.image ? { id: server.image, links: [] } : "",
          metadata: { role: "web" },
          key_name: "ops",
          security_groups: [{ name: "default" }, { name: "default" }, { name: "web" }],
          addresses: { private: [{ addr: "10.0.0.5", version: 4, "OS-EXT-IPS:type": "fixed" }] },
          "os-extended-volumes:volumes_attached": this.disks.map((d) => ({ id: d.id })),
          "OS-EXT-SRV-ATTR:user_data": Buffer.from("#cloud-config\n").toString("base64"),
          "OS-EXT-AZ:availability_zone": "nova",
          created,
          ...server.extra,
        },
      },
    }));
    fake.on("GET", new RegExp(`/servers/${server.id}/os-volume_attachments$`), () => ({
      json: {
        volumeAttachments: this.disks.map((d) => ({
          id: d.id,
          volumeId: d.id,
          serverId: server.id,
          device: d.device,
          delete_on_termination: false,
        })),
      },
    }));
    fake.on("POST", new RegExp(`/servers/${server.id}/action$`), (req) => {
      if (this.failAt === "createImage") return cinderError("conflictingRequest", 409, "Cannot 'createImage'");
      const { name, metadata } = body(req).createImage;
      const image = this.addImage(name, server.root ?? Buffer.alloc(0), server.rootFormat ?? "qcow2", metadata);
      return { status: 202, json: { image_id: image.id } };
    });

    // Glance: an image becomes active (or killed) on its second read.
    fake.on("GET", /^\/v2\/images\/[^/]+$/, (req) => {
      const image = this.images.get(req.url.pathname.split("/")[3]);
      if (!image) return { status: 404, raw: "404 Not Found" };
      if (image.status === "saving" && ++image.polls >= 2)
        image.status = this.failAt === "imageKilled" ? "killed" : "active";
      return { json: this.imageJson(image) };
    });
    fake.on("GET", /^\/v2\/images\/[^/]+\/file$/, (req) => {
      const image = this.images.get(req.url.pathname.split("/")[3]);
      if (!image) return { status: 404, raw: "404 Not Found" };
      // A damaged transfer: the bytes do not match the image's hash.
      if (this.failAt === "download") return { raw: Buffer.concat([image.bytes, Buffer.from("x")]) };
      return { raw: image.bytes };
    });
    fake.on("DELETE", /^\/v2\/images\/[^/]+$/, (req) => {
      const id = req.url.pathname.split("/")[3];
      if (!this.images.delete(id)) return { status: 404, raw: "404 Not Found" };
      return { status: 204 };
    });

    // Cinder.
    fake.on("GET", /\/volumes\/[^/]+$/, (req) => {
      const id = req.url.pathname.split("/").pop()!;
      return this.volumes.has(id) ? { json: this.volumeJson(id) } : notFound(`Volume ${id}`);
    });
    fake.on("POST", /\/snapshots$/, (req) => {
      if (this.failAt === "snapshot") return cinderError("badRequest", 400, "Invalid volume: snapshot refused");
      const { volume_id: volumeId, force } = body(req).snapshot;
      if (!force) return cinderError("badRequest", 400, "Invalid volume: Volume status must be available");
      const snapshot = { id: this.id("snap"), volumeId, status: "creating" };
      this.snapshots.set(snapshot.id, snapshot);
      this.made.push(`snapshot ${snapshot.id}`);
      return { status: 202, json: { snapshot: this.snapshotJson(snapshot.id) } };
    });
    fake.on("GET", /\/snapshots\/[^/]+$/, (req) => {
      const id = req.url.pathname.split("/").pop()!;
      const snapshot = this.snapshots.get(id);
      if (!snapshot) return notFound(`Snapshot ${id}`);
      const json = { snapshot: this.snapshotJson(id) };
      snapshot.status = "available";
      return { json };
    });
    fake.on("DELETE", /\/snapshots\/[^/]+$/, (req) => {
      this.snapshots.delete(req.url.pathname.split("/").pop()!);
      return { status: 202 };
    });
    fake.on("POST", /\/volumes$/, (req) => {
      if (this.failAt === "volume") return cinderError("badRequest", 400, "Invalid input");
      const { snapshot_id: snapshotId, imageRef, size, name } = body(req).volume;
      if (imageRef) {
        const id = this.id("vol");
        this.volumes.set(id, { id, size, bytes: this.images.get(imageRef)!.bytes, status: "available", name });
        this.made.push(`volume ${id} from ${imageRef}`);
        return { status: 202, json: this.volumeJson(id) };
      }
      const from = this.snapshots.get(snapshotId);
      if (!from) return notFound(`Snapshot ${snapshotId}`);
      const id = this.id("vol");
      this.volumes.set(id, { id, size, bytes: this.volumes.get(from.volumeId)!.bytes, status: "available", name });
      this.made.push(`volume ${id}`);
      return { status: 202, json: this.volumeJson(id) };
    });
    fake.on("POST", /\/volumes\/[^/]+\/action$/, (req) => {
      const id = req.url.pathname.split("/").at(-2)!;
      const upload = body(req)["os-volume_upload_image"];
      if (!upload) return cinderError("badRequest", 400, "unknown action");
      if (this.failAt === "upload") return cinderError("badRequest", 400, "Invalid volume: upload refused");
      const image = this.addImage(upload.image_name, this.volumes.get(id)!.bytes, "raw");
      return {
        status: 202,
        json: { "os-volume_upload_image": { id, image_id: image.id, image_name: image.name, disk_format: "raw" } },
      };
    });
    fake.on("DELETE", /\/volumes\/[^/]+$/, (req) => {
      this.volumes.delete(req.url.pathname.split("/").pop()!);
      return { status: 202 };
    });
  }

  /** What a restore makes: images uploaded, volumes from images, servers, attachments. */
  private restoreRoutes(body: (req: SeenRequest) => Record<string, any>) {
    const { fake } = this;
    const idIn = (req: SeenRequest, at: number) => req.url.pathname.split("/").at(at)!;
    fake.on("POST", /^\/v2\/images$/, (req) => {
      const { name, disk_format: diskFormat } = body(req);
      const image = this.addImage(name, Buffer.alloc(0), diskFormat);
      image.status = "queued";
      return { status: 201, json: this.imageJson(image) };
    });
    fake.on("PUT", /^\/v2\/images\/[^/]+\/file$/, (req) => {
      const image = this.images.get(idIn(req, 3))!;
      image.bytes = Buffer.from(req.body as Uint8Array);
      image.status = "saving";
      return { status: 204 };
    });
    fake.on("POST", /\/servers$/, (req) => {
      if (this.failAt === "createServer") return cinderError("badRequest", 400, "Invalid flavorRef");
      const id = this.id("srv");
      this.created.set(id, { request: body(req).server, attached: [] });
      this.made.push(`server ${id}`);
      return { status: 202, json: { server: { id, links: [] } } };
    });
    fake.on("GET", /\/servers\/srv-[0-9]+$/, (req) => {
      const id = idIn(req, -1);
      const made = this.created.get(id);
      if (!made) return cinderError("itemNotFound", 404, `Instance ${id} could not be found.`);
      return {
        json: { server: { id, name: made.request.name, status: "ACTIVE", flavor: { original_name: "x" }, created } },
      };
    });
    fake.on("DELETE", /\/servers\/srv-[0-9]+$/, (req) => {
      this.created.delete(idIn(req, -1));
      return { status: 204 };
    });
    fake.on("POST", /\/servers\/srv-[0-9]+\/os-volume_attachments$/, (req) => {
      if (this.failAt === "attach") return cinderError("badRequest", 400, "Invalid volume: attach refused");
      const volumeId = body(req).volumeAttachment.volumeId;
      this.created.get(idIn(req, -2))!.attached.push(volumeId);
      this.volumes.get(volumeId)!.status = "in-use";
      this.made.push(`attach ${volumeId}`);
      return { json: { volumeAttachment: { id: volumeId, volumeId, serverId: idIn(req, -2), device: "/dev/vdb" } } };
    });
  }

  private snapshotJson(id: string) {
    const snapshot = this.snapshots.get(id)!;
    return { id, status: snapshot.status, volume_id: snapshot.volumeId, size: 1, created_at: created };
  }
}
