/**
 * What the OpenStack client takes from the outside world, injected so that unit tests can serve
 * responses and move time without a cloud or real waiting.
 */
export type FetchFn = (url: string, init: RequestInit) => Promise<Response>;

/** One finished HTTP attempt, for observers such as a benchmark that counts requests. */
export interface RequestEvent {
  readonly service: string;
  readonly method: string;
  /** Without query string. */
  readonly url: string;
  readonly attempt: number;
  /** Absent when no response came (connection error, timeout). */
  readonly status?: number;
  readonly durationMs: number;
}

export interface CloudDeps {
  readonly fetch: FetchFn;
  /** Milliseconds since the epoch. */
  readonly now: () => number;
  /** Resolves after `ms`, or rejects when `signal` aborts. */
  readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Receives already-redacted lines (retries, re-authentication). */
  readonly log: (line: string) => void;
  readonly onRequest: (event: RequestEvent) => void;
}

export function realSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Node's global fetch and the real clock, with any of them replaced by `overrides`. */
export function cloudDeps(overrides: Partial<CloudDeps> = {}): CloudDeps {
  return {
    fetch: (url, init) => fetch(url, init),
    now: () => Date.now(),
    sleep: realSleep,
    log: () => undefined,
    onRequest: () => undefined,
    ...overrides,
  };
}
