import type { z } from "zod";
import { CloudError, requestIdOf } from "./cloudError";
import * as s from "./novaSchemas";
import { paginate, nextLink, withQuery } from "./paginate";
import type { CloudSession, ServiceCall } from "./session";
import { type ListOptions, newerVersion } from "./cinder";

export type { Flavor, Server, VolumeAttachment } from "./novaSchemas";

/**
 * The microversion every call sends unless told otherwise: 2.79 (Train) shows user_data to admins
 * (2.3+), takes networks "none" (2.37), answers createImage in the body (2.45+) and embeds the flavor (2.47+).
 */
export const defaultNovaMicroversion = "2.79";

export interface CreateServerOptions {
  readonly name: string;
  /** The image its root disk is made from; absent when it boots from `bootVolumeId`. */
  readonly imageId?: string;
  /** A volume to boot from (block_device_mapping_v2, kept when the server is deleted). */
  readonly bootVolumeId?: string;
  readonly flavorId: string;
  /** "none" or "auto" need microversion 2.37 (sent automatically); or the networks' ids. */
  readonly networks: "none" | "auto" | readonly { readonly uuid: string }[];
  readonly metadata?: Readonly<Record<string, string>>;
  readonly keyName?: string;
  /** Sent base64-encoded. */
  readonly userData?: string;
  readonly availabilityZone?: string;
  /** Security groups by name; absent: Nova's default. */
  readonly securityGroups?: readonly string[];
}

/** Nova's compute API v2.1, with microversions. */
export class NovaClient {
  constructor(
    private readonly session: CloudSession,
    private readonly microversion = defaultNovaMicroversion,
  ) {}

  async getServer(id: string, signal?: AbortSignal): Promise<s.Server> {
    return (await this.call("GET", `/servers/${enc(id)}`, `server ${id}`, s.serverBody, { signal })).body.server;
  }

  /** Every server of the project (GET /servers/detail, page by page). */
  listServers(options: ListOptions = {}): AsyncGenerator<s.Server> {
    return paginate(async (query) => {
      const path = withQuery("/servers/detail", query ?? { ...options.filters, limit: options.limit });
      const page = (await this.call("GET", path, "servers", s.serverPage, { signal: options.signal })).body;
      return { items: page.servers, next: nextLink(page.servers_links) };
    }, "nova servers");
  }

  /** Starts building a server; returns its id at once (wait with waitForServer). */
  async createServer(options: CreateServerOptions, signal?: AbortSignal): Promise<{ id: string }> {
    const server = {
      name: options.name,
      imageRef: options.imageId,
      block_device_mapping_v2: options.bootVolumeId
        ? [
            {
              boot_index: 0,
              uuid: options.bootVolumeId,
              source_type: "volume",
              destination_type: "volume",
              delete_on_termination: false,
            },
          ]
        : undefined,
      security_groups: options.securityGroups?.map((name) => ({ name })),
      flavorRef: options.flavorId,
      networks: options.networks,
      metadata: options.metadata,
      key_name: options.keyName,
      user_data: options.userData === undefined ? undefined : Buffer.from(options.userData).toString("base64"),
      availability_zone: options.availabilityZone,
    };
    const minimum = typeof options.networks === "string" ? "2.37" : undefined;
    const resource = `server ${options.name}`;
    const reply = await this.call("POST", "/servers", resource, s.serverCreated, { json: { server }, signal }, minimum);
    return { id: reply.body.server.id };
  }

  /**
   * Snapshots the server into a new Glance image (the createImage action); returns the image's id at
   * once, the image becomes active later. 2.45+ answers with image_id in the body, older ones in Location.
   */
  async createImage(
    id: string,
    options: { name: string; metadata?: Readonly<Record<string, string>> },
    signal?: AbortSignal,
  ): Promise<{ imageId: string }> {
    const json = { createImage: { name: options.name, metadata: options.metadata } };
    const path = `/servers/${enc(id)}/action`;
    const reply = await this.call("POST", path, `server ${id}`, s.anyBody, { json, signal });
    const inBody = s.createImageBody.safeParse(reply.body);
    if (inBody.success) return { imageId: inBody.data.image_id };
    const fromLocation = reply.headers.get("location")?.match(/\/images\/([^/?#]+)\/?$/)?.[1];
    if (fromLocation) return { imageId: decodeURIComponent(fromLocation) };
    throw new CloudError(
      "CLOUD_BAD_RESPONSE",
      `nova server ${id}: createImage answered without an image id (no image_id in the body, no Location header).`,
      { service: "nova", resource: `server ${id}`, status: reply.status, requestId: requestIdOf(reply.headers) },
    );
  }

  async deleteServer(id: string, signal?: AbortSignal): Promise<void> {
    await this.call("DELETE", `/servers/${enc(id)}`, `server ${id}`, s.anyBody, { signal });
  }

  /** Attaches volume `volumeId` to the server (the volume is in-use once Cinder says so). */
  async attachVolume(id: string, volumeId: string, signal?: AbortSignal): Promise<void> {
    const path = `/servers/${enc(id)}/os-volume_attachments`;
    const json = { volumeAttachment: { volumeId } };
    await this.call("POST", path, `server ${id}`, s.anyBody, { json, signal });
  }

  /** Every flavor the project may use, with its values. */
  async listFlavors(signal?: AbortSignal): Promise<s.Flavor[]> {
    return (await this.call("GET", "/flavors/detail", "flavors", s.flavorList, { signal })).body.flavors;
  }

  async listVolumeAttachments(id: string, signal?: AbortSignal): Promise<s.VolumeAttachment[]> {
    const path = `/servers/${enc(id)}/os-volume_attachments`;
    return (await this.call("GET", path, `volume attachments of server ${id}`, s.volumeAttachmentList, { signal })).body
      .volumeAttachments;
  }

  private async call<T>(
    method: ServiceCall["method"],
    path: string,
    resource: string,
    schema: z.ZodType<T>,
    extra: { json?: unknown; signal?: AbortSignal },
    minimumMicroversion?: string,
  ) {
    const version = newerVersion(this.microversion, minimumMicroversion);
    const headers = { "OpenStack-API-Version": `compute ${version}` };
    const call: ServiceCall = { service: "nova", method, path, resource, headers, ...extra };
    return this.session.request(call, schema);
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}
