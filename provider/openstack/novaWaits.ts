import type { NovaClient } from "./nova";
import type { Server } from "./novaSchemas";
import { type StatusWaitOptions, waitForDeletion, waitForStatus } from "./poll";

export type NovaWaitOptions = StatusWaitOptions;

const serverCheck = "nova-compute's, nova-conductor's and nova-scheduler's logs and `openstack compute service list`";

/** Waits for a server to reach `until` (default ACTIVE); ERROR fails at once with the server's fault. */
export function waitForServer(
  nova: NovaClient,
  id: string,
  options: NovaWaitOptions,
  until: readonly string[] = ["ACTIVE"],
): Promise<Server> {
  return waitForStatus<Server>({
    ...options,
    what: `nova server ${id}`,
    get: () => nova.getServer(id, options.signal),
    status: (server) => server.status,
    failReason: (server) => server.fault?.message,
    until,
    failed: ["ERROR"],
    whatToCheck: serverCheck,
  });
}

/** Waits until the server is gone (404, or DELETED when the cloud soft-deletes); a server in ERROR can go too. */
export function waitForServerDeleted(nova: NovaClient, id: string, options: NovaWaitOptions): Promise<void> {
  return waitForDeletion<Server>({
    ...options,
    what: `nova server ${id}`,
    get: () => nova.getServer(id, options.signal),
    status: (server) => (server.status === "DELETED" ? "deleted" : server.status),
    failReason: (server) => server.fault?.message,
    failed: [],
    whatToCheck: serverCheck,
  });
}
