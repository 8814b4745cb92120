import { CofferError, isCofferError } from "../common/errors";
import { CloudError } from "./cloudError";
import type { CloudDeps } from "./deps";

/** How long a status wait may take and whom it tells: what every resource's wait shares. */
export interface StatusWaitOptions {
  readonly timeoutMs: number;
  readonly deps: Pick<CloudDeps, "now" | "sleep">;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: { status: string; elapsedMs: number }) => void;
}

export interface WaitOptions<R> {
  /** Names the resource in messages: "cinder backup 1234". */
  readonly what: string;
  readonly get: () => Promise<R>;
  readonly status: (resource: R) => string;
  /** The statuses that end the wait successfully, e.g. ["available"]. */
  readonly until: readonly string[];
  /** Statuses that fail at once; default: any status starting with "error", and "killed". */
  readonly failed?: readonly string[];
  /** The cloud's explanation of a failure (a Cinder backup's fail_reason, Cinder's user messages). */
  readonly failReason?: (resource: R) => FailReason | Promise<FailReason>;
  readonly timeoutMs: number;
  /** What to check when the wait times out, e.g. "cinder-backup's log and `openstack volume service list`". */
  readonly whatToCheck?: string;
  readonly deps: Pick<CloudDeps, "now" | "sleep">;
  readonly onProgress?: (progress: { status: string; elapsedMs: number; resource: R }) => void;
  readonly signal?: AbortSignal;
}

type FailReason = string | null | undefined;

const firstDelayMs = 500;
const maxDelayMs = 5_000;

/** Polls until the resource reaches one of `until`; fails at once on an error status, or on timeout. */
export async function waitForStatus<R>(options: WaitOptions<R>): Promise<R> {
  const started = options.deps.now();
  let delay = firstDelayMs;
  for (;;) {
    const resource = await options.get();
    const status = options.status(resource);
    const elapsedMs = options.deps.now() - started;
    options.onProgress?.({ status, elapsedMs, resource });
    if (options.until.includes(status)) return resource;
    if (isFailed(status, options.failed)) throw failedError(options, status, await failReason(options, resource));
    if (elapsedMs + delay > options.timeoutMs) throw timeoutError(options, status);
    await sleep(options, delay);
    delay = Math.min(maxDelayMs, Math.round(delay * 1.5));
  }
}

export type DeletionWaitOptions<R> = Omit<WaitOptions<R>, "until" | "onProgress"> &
  Pick<WaitOptions<R | undefined>, "onProgress">;

/** Polls until the resource is gone (a 404 from `get`, or status "deleted"). */
export async function waitForDeletion<R>(options: DeletionWaitOptions<R>): Promise<void> {
  const get = async (): Promise<R | undefined> => {
    try {
      return await options.get();
    } catch (error) {
      if (isCofferError(error) && error.code === "CLOUD_NOT_FOUND") return undefined;
      throw error;
    }
  };
  await waitForStatus<R | undefined>({
    ...options,
    get,
    status: (resource) => (resource === undefined ? "deleted" : options.status(resource)),
    failReason: (resource) => (resource === undefined ? undefined : options.failReason?.(resource)),
    until: ["deleted"],
  });
}

/** The explanation, if the cloud gives one; asking for it must not hide the failure itself. */
async function failReason<R>(options: WaitOptions<R>, resource: R): Promise<FailReason> {
  try {
    return await options.failReason?.(resource);
  } catch {
    return undefined;
  }
}

function isFailed(status: string, failed: readonly string[] | undefined): boolean {
  return failed ? failed.includes(status) : status.startsWith("error") || status === "killed";
}

function failedError<R>(options: WaitOptions<R>, status: string, reason: FailReason): CofferError {
  const because = reason ? `: ${reason.trim().replace(/\.$/, "")}` : " (the cloud gives no reason)";
  return new CloudError(
    "CLOUD_RESOURCE_FAILED",
    `${options.what} went to status "${status}"${because}. ` +
      `${options.whatToCheck ? `Check ${options.whatToCheck}; ` : ""}an operator may need to reset its status.`,
    facts(options.what),
  );
}

function timeoutError<R>(options: WaitOptions<R>, status: string): CofferError {
  const wanted = options.until.map((value) => `"${value}"`).join(" or ");
  return new CloudError(
    "CLOUD_TIMEOUT",
    `${options.what} is still "${status}" after ${Math.round(options.timeoutMs / 1000)} s (waiting for ${wanted}). ` +
      `Check ${options.whatToCheck ?? "that the service's workers run and their logs"}.`,
    facts(options.what),
  );
}

function facts(what: string): { service: string; resource: string } {
  const [service, ...rest] = what.split(" ");
  return { service, resource: rest.join(" ") };
}

async function sleep<R>(options: WaitOptions<R>, ms: number): Promise<void> {
  try {
    await options.deps.sleep(ms, options.signal);
  } catch (error) {
    throw new CofferError("ABORTED", `waiting for ${options.what}: cancelled`, { cause: error });
  }
}
