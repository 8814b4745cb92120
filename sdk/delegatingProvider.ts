import type * as pulumi from "@pulumi/pulumi";

/**
 * The provider object Pulumi serializes into each resource's state (`__provider`). It is kept to
 * a few lines that load the installed implementation, `require("coffer/provider/<name>")`, when
 * a method runs: so state holds no copy of Coffer's code, no absolute path and no secret, and
 * `refresh` and `destroy` run the installed Coffer rather than the one of the last `up`.
 * Only the string `implementation` is captured.
 */
export function delegatingProvider(implementation: string): pulumi.dynamic.ResourceProvider {
  return {
    async configure(req) {
      const impl = require(implementation).provider;
      if (impl.configure) await impl.configure(req);
    },
    check: (olds, news) => require(implementation).provider.check(olds, news),
    diff: (id, olds, news) => require(implementation).provider.diff(id, olds, news),
    create: (inputs) => require(implementation).provider.create(inputs),
    read: (id, props) => require(implementation).provider.read(id, props),
    update: (id, olds, news) => require(implementation).provider.update(id, olds, news),
    delete: (id, props) => require(implementation).provider.delete(id, props),
  };
}
