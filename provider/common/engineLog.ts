/**
 * Progress messages to the Pulumi engine, which shows them while `pulumi up` runs. Pulumi's
 * dynamic-provider host is started with the engine's address as its argument; the provider
 * object gets no logger, so this connects to the engine's Log service itself. Outside that host
 * (tests, the agent) it does nothing. Messages are ephemeral: shown live, not kept in history.
 */
let client: { log(req: unknown, cb: (err: unknown) => void): void } | null | undefined;

function engineClient() {
  if (client !== undefined) return client;
  const address = process.argv[2];
  const inProviderHost = /dynamic-provider/.test(process.argv[1] ?? "") && /^[\w.[\]:-]+:\d+$/.test(address ?? "");
  if (!inProviderHost) return (client = null);
  const grpc = require("@grpc/grpc-js");
  const { EngineClient } = require("@pulumi/pulumi/proto/engine_grpc_pb");
  client = new EngineClient(address, grpc.credentials.createInsecure());
  return client;
}

// One call at a time, so that messages arrive in the order they were sent.
let queue: Promise<void> = Promise.resolve();

/** `ephemeral`: shown live only; otherwise kept in the output of preview and up (what a review reads). */
export function engineLog(message: string, options: { ephemeral?: boolean } = {}): void {
  const engine = engineClient();
  if (!engine) return;
  const proto = require("@pulumi/pulumi/proto/engine_pb");
  const req = new proto.LogRequest();
  req.setSeverity(proto.LogSeverity.INFO);
  req.setMessage(message);
  req.setEphemeral(options.ephemeral ?? true);
  queue = queue.then(() => new Promise<void>((resolve) => engine.log(req, () => resolve())));
}
