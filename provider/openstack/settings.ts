/**
 * The OpenStack settings Coffer reads, and where each is spelled in the three places it can come
 * from: the stack's `openstack:*` config (the keys @pulumi/openstack reads), `OS_*` variables, and a
 * clouds.yaml entry. This table is the one place that knows those spellings.
 */
export interface CloudSettings {
  authUrl?: string;
  userName?: string;
  userId?: string;
  password?: string;
  projectName?: string;
  projectId?: string;
  projectDomainName?: string;
  projectDomainId?: string;
  userDomainName?: string;
  userDomainId?: string;
  domainName?: string;
  domainId?: string;
  defaultDomain?: string;
  region?: string;
  endpointType?: string;
  applicationCredentialId?: string;
  applicationCredentialName?: string;
  applicationCredentialSecret?: string;
  cacertFile?: string;
  cert?: string;
  key?: string;
  insecure?: string;
  maxRetries?: string;
  /** clouds.yaml only: password, v3password, v3applicationcredential, ... */
  authType?: string;
}
export type SettingName = keyof CloudSettings;

interface Spelling {
  /** After "openstack:". */
  readonly stack?: string;
  readonly env: readonly string[];
  /** Dotted paths inside the cloud's entry. */
  readonly yaml: readonly string[];
}

export const spellings: Readonly<Record<SettingName, Spelling>> = {
  authUrl: { stack: "authUrl", env: ["OS_AUTH_URL"], yaml: ["auth.auth_url"] },
  userName: { stack: "userName", env: ["OS_USERNAME"], yaml: ["auth.username"] },
  userId: { stack: "userId", env: ["OS_USER_ID"], yaml: ["auth.user_id"] },
  password: { stack: "password", env: ["OS_PASSWORD"], yaml: ["auth.password"] },
  projectName: {
    stack: "tenantName",
    env: ["OS_PROJECT_NAME", "OS_TENANT_NAME"],
    yaml: ["auth.project_name", "auth.tenant_name"],
  },
  projectId: { stack: "tenantId", env: ["OS_PROJECT_ID", "OS_TENANT_ID"], yaml: ["auth.project_id", "auth.tenant_id"] },
  projectDomainName: {
    stack: "projectDomainName",
    env: ["OS_PROJECT_DOMAIN_NAME"],
    yaml: ["auth.project_domain_name"],
  },
  projectDomainId: { stack: "projectDomainId", env: ["OS_PROJECT_DOMAIN_ID"], yaml: ["auth.project_domain_id"] },
  userDomainName: { stack: "userDomainName", env: ["OS_USER_DOMAIN_NAME"], yaml: ["auth.user_domain_name"] },
  userDomainId: { stack: "userDomainId", env: ["OS_USER_DOMAIN_ID"], yaml: ["auth.user_domain_id"] },
  domainName: { stack: "domainName", env: ["OS_DOMAIN_NAME"], yaml: ["auth.domain_name"] },
  domainId: { stack: "domainId", env: ["OS_DOMAIN_ID"], yaml: ["auth.domain_id"] },
  defaultDomain: { stack: "defaultDomain", env: ["OS_DEFAULT_DOMAIN"], yaml: ["auth.default_domain"] },
  region: { stack: "region", env: ["OS_REGION_NAME"], yaml: ["region_name"] },
  endpointType: {
    stack: "endpointType",
    env: ["OS_INTERFACE", "OS_ENDPOINT_TYPE"],
    yaml: ["interface", "endpoint_type"],
  },
  applicationCredentialId: {
    stack: "applicationCredentialId",
    env: ["OS_APPLICATION_CREDENTIAL_ID"],
    yaml: ["auth.application_credential_id"],
  },
  applicationCredentialName: {
    stack: "applicationCredentialName",
    env: ["OS_APPLICATION_CREDENTIAL_NAME"],
    yaml: ["auth.application_credential_name"],
  },
  applicationCredentialSecret: {
    stack: "applicationCredentialSecret",
    env: ["OS_APPLICATION_CREDENTIAL_SECRET"],
    yaml: ["auth.application_credential_secret"],
  },
  cacertFile: { stack: "cacertFile", env: ["OS_CACERT"], yaml: ["cacert"] },
  cert: { stack: "cert", env: ["OS_CERT"], yaml: ["cert"] },
  key: { stack: "key", env: ["OS_KEY"], yaml: ["key"] },
  insecure: { stack: "insecure", env: ["OS_INSECURE"], yaml: ["insecure"] },
  maxRetries: { stack: "maxRetries", env: [], yaml: [] },
  authType: { env: ["OS_AUTH_TYPE"], yaml: ["auth_type"] },
};

/** The settings that hold secrets: kept in the config, and redacted from every error and log line. */
export const secretSettings: readonly SettingName[] = ["password", "applicationCredentialSecret"];

/** "set openstack:authUrl, OS_AUTH_URL or auth.auth_url in clouds.yaml". */
export function howToSet(name: SettingName): string {
  const spelling = spellings[name];
  const places = [
    ...(spelling.stack ? [`openstack:${spelling.stack}`] : []),
    ...spelling.env,
    ...(spelling.yaml.length ? [`${spelling.yaml[0]} in clouds.yaml`] : []),
  ];
  return `set ${places.slice(0, -1).join(", ")}${places.length > 1 ? " or " : ""}${places[places.length - 1]}`;
}
