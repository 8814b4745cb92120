import { ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as provrpc from "@pulumi/pulumi/proto/provider_grpc_pb";
import * as provproto from "@pulumi/pulumi/proto/provider_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";

/**
 * Pulumi's own dynamic-provider host (`@pulumi/pulumi/cmd/dynamic-provider`), the process the
 * CLI's `pulumi-resource-pulumi-nodejs` shim starts, run from `cwd` and driven over gRPC.
 * `launch` starts it another way (it prints its port first on stdout); `process` is what was started.
 */
export class ProviderHost {
  private constructor(
    readonly process: ChildProcess,
    private readonly client: any,
  ) {}

  static async start(cwd: string, launch?: { file: string; args: string[] }): Promise<ProviderHost> {
    const entry = require.resolve("@pulumi/pulumi/cmd/dynamic-provider", { paths: [cwd] });
    const { file, args } = launch ?? { file: process.execPath, args: [entry, "127.0.0.1:0"] };
    const child = spawn(file, args, {
      cwd,
      env: { ...process.env, PULUMI_NODEJS_PROJECT: "coffer-grpc" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const port = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (chunk) => {
        out += chunk;
        const line = out.split("\n")[0];
        if (out.includes("\n")) resolve(line.trim());
      });
      child.on("exit", (code) => reject(new Error(`provider host exited with ${code}`)));
    });
    const Client = grpc.makeGenericClientConstructor((provrpc as any).ResourceProviderService, "ResourceProvider");
    return new ProviderHost(child, new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()));
  }

  stop(): void {
    this.client.close();
    this.process.kill();
  }

  private call<T>(method: string, request: unknown): Promise<T> {
    return new Promise((resolve, reject) =>
      this.client[method](request, (err: Error | null, res: T) => (err ? reject(err) : resolve(res))),
    );
  }

  async configure(config: Record<string, string>): Promise<void> {
    const req = new provproto.ConfigureRequest();
    req.setArgs(Struct.fromJavaScript(config));
    await this.call("configure", req);
  }

  async check(urn: string, olds: object, news: object) {
    const req = new provproto.CheckRequest();
    req.setUrn(urn);
    req.setOlds(Struct.fromJavaScript(olds as never));
    req.setNews(Struct.fromJavaScript(news as never));
    const res: any = await this.call("check", req);
    return {
      inputs: res.getInputs()?.toJavaScript() as Record<string, any> | undefined,
      failures: res.getFailuresList().map((f: any) => ({ property: f.getProperty(), reason: f.getReason() })),
    };
  }

  async diff(urn: string, id: string, olds: object, news: object) {
    const req = new provproto.DiffRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setOlds(Struct.fromJavaScript(olds as never));
    req.setNews(Struct.fromJavaScript(news as never));
    const res: any = await this.call("diff", req);
    const names = Object.fromEntries(Object.entries(provproto.DiffResponse.DiffChanges).map(([k, v]) => [v, k]));
    return { changes: names[res.getChanges()], replaces: res.getReplacesList() as string[] };
  }

  async create(urn: string, properties: object) {
    const req = new provproto.CreateRequest();
    req.setUrn(urn);
    req.setProperties(Struct.fromJavaScript(properties as never));
    const res: any = await this.call("create", req);
    return { id: res.getId() as string, properties: res.getProperties().toJavaScript() as Record<string, any> };
  }

  async read(urn: string, id: string, properties: object) {
    const req = new provproto.ReadRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setProperties(Struct.fromJavaScript(properties as never));
    const res: any = await this.call("read", req);
    return {
      id: res.getId() as string,
      properties: res.getProperties()?.toJavaScript() as Record<string, any>,
      inputs: res.getInputs()?.toJavaScript() as Record<string, any> | undefined,
    };
  }

  async update(urn: string, id: string, olds: object, news: object) {
    const req = new provproto.UpdateRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setOlds(Struct.fromJavaScript(olds as never));
    req.setNews(Struct.fromJavaScript(news as never));
    const res: any = await this.call("update", req);
    return { properties: res.getProperties().toJavaScript() as Record<string, any> };
  }

  async delete(urn: string, id: string, properties: object): Promise<void> {
    const req = new provproto.DeleteRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setProperties(Struct.fromJavaScript(properties as never));
    await this.call("delete", req);
  }
}

export const repoRoot = path.resolve(__dirname, "../..");
