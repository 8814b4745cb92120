import { existsSync, readFileSync } from "node:fs";

/** A Keystone user of the loopback cloud, with what a password token scoped to its project needs. */
export interface LoopbackCloudUser {
  username: string;
  password: string;
  projectName: string;
  userDomainName: string;
  projectDomainName: string;
}

/** What tools/openstack/osloop.sh up writes to <state>/cloud.json. */
export interface LoopbackCloud {
  authUrl: string;
  region: string;
  /** member + creator on project demo */
  demo: LoopbackCloudUser;
  /** admin on project admin */
  admin: LoopbackCloudUser;
  /** where Cinder's volume-<id> files are: write a volume's bytes here, read a restored one */
  volumesDir: string;
  /** the posix backup driver's folder */
  backupsDir: string;
  volumeTypes: { default: string; encrypted: string };
  /** Absent from clouds started before Nova could be; `up` false unless started with OSLOOP_NOVA=1. */
  nova?: LoopbackNova;
}

/** Nova on the loopback cloud: libvirt with QEMU under TCG, Neutron without agents (so no networks). */
export interface LoopbackNova {
  up: boolean;
  /** 64 MiB of RAM, a 1 GiB disk, 1 vCPU */
  flavorId?: string;
  /** null: servers are created with networks "none" */
  networkId?: string | null;
  /** where nova-compute keeps each server's disk */
  instancesDir?: string;
}

export const cloudMissingNote =
  "skipped: the loopback cloud is not up (COFFER_CLOUD=1 tools/test.sh --selectProjects cloud starts it)";

/**
 * The loopback cloud described by the file in COFFER_OSLOOP_CLOUD (tools/test.sh sets it after
 * `osloop.sh up`), or undefined when it is not up: the caller skips, naming cloudMissingNote in its
 * describe title (Jest hides the output of a suite that runs no test). In CI a missing cloud is an
 * error: the cloud tier must run there.
 */
export function loopbackCloud(): LoopbackCloud | undefined {
  const file = process.env.COFFER_OSLOOP_CLOUD;
  if (file && existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as LoopbackCloud;
  if (process.env.CI === "true") {
    const missing = file ? `${file} does not exist` : "COFFER_OSLOOP_CLOUD is not set";
    throw new Error(
      `the cloud tier needs the loopback cloud in CI, but ${missing}: ` +
        "run tools/test.sh, which starts it with tools/openstack/osloop.sh",
    );
  }
  return undefined;
}

export const novaMissingNote =
  "skipped: the loopback cloud runs without Nova (OSLOOP_NOVA=1 tools/openstack/osloop.sh up starts it with Nova)";

/**
 * The loopback cloud when it runs Nova, else undefined (the caller skips, naming novaMissingNote).
 * With CI=true a cloud without Nova is an error: the Nova tests must run there (tools/test.sh starts it so).
 */
export function loopbackCloudWithNova(): LoopbackCloud | undefined {
  const cloud = loopbackCloud();
  if (cloud?.nova?.up) return cloud;
  if (process.env.CI === "true") {
    throw new Error(
      "CI needs the loopback cloud with Nova, but " +
        (cloud ? "its cloud.json says Nova is not up" : "the cloud is not up") +
        ": start it with OSLOOP_NOVA=1 tools/openstack/osloop.sh up",
    );
  }
  return undefined;
}
