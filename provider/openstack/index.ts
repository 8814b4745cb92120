/**
 * Coffer's typed OpenStack client: Keystone v3, Cinder v3, Glance v2, Barbican v1 and Nova v2.1 on Node's
 * global fetch, every response checked with zod, every failure a CofferError naming the service,
 * the resource, the HTTP status, the server's message and the request id.
 */
import { CofferError } from "../common/errors";
import { BarbicanClient } from "./barbican";
import { CinderClient, defaultCinderMicroversion } from "./cinder";
import { resolveCloudConfig, type CloudConfig, type ConfigSources } from "./config";
import { cloudDeps, type CloudDeps } from "./deps";
import { GlanceClient } from "./glance";
import { NovaClient, defaultNovaMicroversion } from "./nova";
import { CloudSession } from "./session";

export interface Cloud {
  readonly session: CloudSession;
  readonly cinder: CinderClient;
  readonly glance: GlanceClient;
  readonly barbican: BarbicanClient;
  readonly nova: NovaClient;
}

export interface CloudOptions {
  /** Per request, until the response headers (the JSON body included); default 60 s. */
  readonly timeoutMs?: number;
  /** Default "3.64"; calls that need a newer one send that. */
  readonly cinderMicroversion?: string;
  /** Default "2.79"; calls that need a newer one send that. */
  readonly novaMicroversion?: string;
}

/** Connects lazily: nothing is sent until the first call (which authenticates). */
export function openCloud(config: CloudConfig, deps: Partial<CloudDeps> = {}, options: CloudOptions = {}): Cloud {
  if (!deps.fetch) refuseUnsupportedTls(config);
  const session = new CloudSession(config, cloudDeps(deps), { timeoutMs: options.timeoutMs });
  return {
    session,
    cinder: new CinderClient(session, options.cinderMicroversion ?? defaultCinderMicroversion),
    glance: new GlanceClient(session),
    barbican: new BarbicanClient(session),
    nova: new NovaClient(session, options.novaMicroversion ?? defaultNovaMicroversion),
  };
}

/**
 * Resolves the config from the stack, OS_* and clouds.yaml, then opens the cloud. In a dynamic
 * provider's `configure`: `openCloudFrom({ stack: (key) => req.config.get(key) })`.
 */
export async function openCloudFrom(
  sources: ConfigSources,
  deps: Partial<CloudDeps> = {},
  options: CloudOptions = {},
): Promise<Cloud> {
  return openCloud(await resolveCloudConfig(sources), deps, options);
}

/**
 * Node's global fetch takes no per-call TLS settings; a CA file works when Node was started with it
 * in NODE_EXTRA_CA_CERTS. Anything else is refused rather than silently ignored.
 */
function refuseUnsupportedTls(config: CloudConfig): void {
  const problem = config.insecure
    ? "openstack:insecure (OS_INSECURE, verify: false) is set"
    : config.cert || config.key
      ? "a client certificate (openstack:cert/key, OS_CERT/OS_KEY) is set"
      : config.cacertFile && process.env.NODE_EXTRA_CA_CERTS !== config.cacertFile
        ? `openstack:cacertFile (OS_CACERT, cacert) is ${config.cacertFile}`
        : undefined;
  if (!problem) return;
  throw new CofferError(
    "CLOUD_CONFIG_INVALID",
    `${problem}, which Coffer's OpenStack client cannot apply to Node's fetch. For a private CA, run pulumi with ` +
      "NODE_EXTRA_CA_CERTS set to the same file; skipping verification and client certificates are not supported.",
  );
}

export { BarbicanClient, secretId, type SecretMetadata, type StoreSecretOptions } from "./barbican";
export {
  CinderClient,
  defaultCinderMicroversion,
  type Backup,
  type CreateBackupOptions,
  type CreateSnapshotOptions,
  type CreateVolumeOptions,
  type ListOptions,
  type Snapshot,
  type UploadToImageOptions,
  type Volume,
  type VolumeType,
  type VolumeTypeEncryption,
} from "./cinder";
export * from "./cinderWaits";
export { CloudError } from "./cloudError";
export {
  cloudConfig,
  resolveCloudConfig,
  type CloudConfig,
  type CloudSettings,
  type ConfigSources,
  type Identity,
  type Scope,
} from "./config";
export { cloudDeps, type CloudDeps, type FetchFn, type RequestEvent } from "./deps";
export { GlanceClient, type CreateImageOptions, type DownloadResult, type Image, type ImagePatchOp } from "./glance";
export {
  NovaClient,
  defaultNovaMicroversion,
  type CreateServerOptions,
  type Server,
  type VolumeAttachment,
} from "./nova";
export * from "./novaWaits";
export { collect } from "./paginate";
export {
  waitForDeletion,
  waitForStatus,
  type DeletionWaitOptions,
  type StatusWaitOptions,
  type WaitOptions,
} from "./poll";
export { CloudSession, type ServiceCall, type ServiceName } from "./session";
