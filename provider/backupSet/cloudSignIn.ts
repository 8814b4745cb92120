import { engineLog } from "../common/engineLog";
import { cloudDeps, openCloudFrom } from "../openstack";
import { CloudAccess, cloudAccessOf } from "./take";

/**
 * A provider's way into the cloud: signs in on first use (stack config, then OS_* variables, then
 * clouds.yaml), once per process; `configure` gives it the stack's config (`openstack:*` keys).
 */
export function cloudSignIn() {
  let stackConfig: ((key: string) => string | undefined) | undefined;
  let access: Promise<CloudAccess> | undefined;
  return {
    open(): Promise<CloudAccess> {
      access ??= (async () => {
        const deps = cloudDeps({ log: (line) => engineLog(line) });
        return cloudAccessOf(await openCloudFrom({ stack: stackConfig, env: process.env }, deps), deps);
      })();
      // A failed sign-in is not kept: the next call tries again (and says why again).
      access.catch(() => (access = undefined));
      return access;
    },
    configure(req: { config: { get(key: string): string | undefined } }): void {
      stackConfig = (key) => req.config.get(key);
      access = undefined;
    },
  };
}
