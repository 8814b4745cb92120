import { MockMonitor } from "@pulumi/pulumi/runtime/mocks";

/** Pulumi's wire marker of a secret value: `{ [SECRET_SIG]: SECRET_VALUE, value }`. */
export const SECRET_SIG = "4dabf18193072939515e22adb298388d";
export const SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270";

/** Captures what the SDK really sends the engine: options and the secret-marked wire values. */
export class RecordingMonitor extends MockMonitor {
  readonly requests: { type: string; name: string; additionalSecretOutputs: string[]; object: Record<string, any> }[] =
    [];
  async registerResource(req: any, callback: (err: any, res: any) => void) {
    this.requests.push({
      type: req.getType(),
      name: req.getName(),
      additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
      object: req.getObject().toJavaScript(),
    });
    return super.registerResource(req, callback);
  }
}
