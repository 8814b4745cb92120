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
