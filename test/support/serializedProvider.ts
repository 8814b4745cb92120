import * as pulumi from "@pulumi/pulumi";

/** The `__provider` text Pulumi stores for `provider`, and the provider object it loads back into. */
export async function serializeProvider(provider: pulumi.dynamic.ResourceProvider) {
  const serialized = await pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true });
  // The same loader Pulumi's provider host uses.
  const requireFromString: (code: string) => {
    handler: () => pulumi.dynamic.ResourceProvider;
  } = require("require-from-string");
  return {
    text: serialized.text,
    containsSecrets: serialized.containsSecrets,
    load: () => requireFromString(serialized.text).handler(),
  };
}
