/** The checked shape of a cloud's connection settings. */
export type DomainRef = { readonly id: string } | { readonly name: string };
export type UserRef = { readonly id: string } | { readonly name: string; readonly domain: DomainRef };

export type Identity =
  | { readonly kind: "password"; readonly user: UserRef; readonly password: string }
  | {
      readonly kind: "applicationCredential";
      readonly credential: { readonly id: string } | { readonly name: string; readonly user: UserRef };
      readonly secret: string;
    };

/** Application credentials carry their own scope, so they have none here. */
export type Scope =
  | { readonly project: { readonly id: string } | { readonly name: string; readonly domain: DomainRef } }
  | { readonly domain: DomainRef };

export type EndpointInterface = "public" | "internal" | "admin";

/** A complete, checked description of how to reach and authenticate to one cloud. */
export interface CloudConfig {
  /** The Keystone v3 URL, ending in /v3. */
  readonly authUrl: string;
  readonly identity: Identity;
  readonly scope?: Scope;
  readonly region?: string;
  readonly interface: EndpointInterface;
  readonly cacertFile?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly insecure: boolean;
  readonly maxRetries: number;
  /** The password or application-credential secret: redacted from every error and log line. */
  readonly secrets: readonly string[];
}
