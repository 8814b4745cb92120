import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { cloudConfig, resolveCloudConfig, type ConfigSources } from "../../provider/openstack/config";
import { useTempDir } from "../support/tempDir";

const dir = useTempDir("coffer-osconfig-");

/** Sources with no stack, the given env, and clouds.yaml search dirs all inside the temp dir. */
function sources(stack: Record<string, string>, env: Record<string, string>): ConfigSources {
  return {
    stack: (key) => stack[key],
    env,
    cwd: path.join(dir(), "cwd"),
    home: path.join(dir(), "home"),
    systemDir: path.join(dir(), "etc"),
  };
}

function write(relative: string, text: string): string {
  const file = path.join(dir(), relative);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

const cloudsYaml = `
clouds:
  loop:
    auth:
      auth_url: http://yaml.example:5000
      username: yaml-user
      project_name: yaml-project
      user_domain_name: YamlDomain
      project_domain_id: yamlprojdomain
    region_name: YamlRegion
    interface: internal
  other:
    auth:
      auth_url: http://other.example:5000/v3
`;
const secureYaml = `
clouds:
  loop:
    auth:
      password: yaml-secret-pw
`;

describe("resolveCloudConfig: precedence stack > OS_* > clouds.yaml, field by field", () => {
  test("each field comes from the highest source that sets it; secure.yaml adds the password", async () => {
    write("home/.config/openstack/clouds.yaml", cloudsYaml);
    write("home/.config/openstack/secure.yaml", secureYaml);
    const config = await resolveCloudConfig(
      sources({ "openstack:cloud": "loop", "openstack:region": "StackRegion" }, { OS_USERNAME: "env-user" }),
    );
    expect(config).toMatchObject({
      authUrl: "http://yaml.example:5000/v3",
      identity: {
        kind: "password",
        user: { name: "env-user", domain: { name: "YamlDomain" } },
        password: "yaml-secret-pw",
      },
      scope: { project: { name: "yaml-project", domain: { id: "yamlprojdomain" } } },
      region: "StackRegion",
      interface: "internal",
      insecure: false,
      maxRetries: 3,
    });
    expect(config.secrets).toEqual(["yaml-secret-pw"]);
  });

  test("OS_CLOUD picks the cloud; ./clouds.yaml beats ~/.config and /etc; XDG_CONFIG_HOME is honoured", async () => {
    write("etc/clouds.yaml", cloudsYaml.replace("yaml.example", "etc.example"));
    write("xdg/openstack/clouds.yaml", cloudsYaml.replace("yaml.example", "xdg.example"));
    const env = { OS_CLOUD: "loop", OS_PASSWORD: "pw", XDG_CONFIG_HOME: path.join(dir(), "xdg") };
    expect((await resolveCloudConfig(sources({}, env))).authUrl).toBe("http://xdg.example:5000/v3");
    write("cwd/clouds.yaml", cloudsYaml.replace("yaml.example", "cwd.example"));
    expect((await resolveCloudConfig(sources({}, env))).authUrl).toBe("http://cwd.example:5000/v3");
    const { XDG_CONFIG_HOME: _, ...withoutXdg } = env;
    write("cwd/clouds.yaml", "clouds: {}\n");
    await expect(resolveCloudConfig(sources({}, withoutXdg))).rejects.toThrow(/which .*cwd\/clouds.yaml does not list/);
  });

  test("the stack beats OS_* for the whole name/id pair: tenantName wins over OS_PROJECT_ID", async () => {
    const config = await resolveCloudConfig(
      sources(
        { "openstack:authUrl": "http://k:5000/v3/", "openstack:tenantName": "stackproj" },
        { OS_PROJECT_ID: "envprojid", OS_USER_ID: "uid", OS_PASSWORD: "pw", OS_PROJECT_DOMAIN_NAME: "D" },
      ),
    );
    expect(config.scope).toEqual({ project: { name: "stackproj", domain: { name: "D" } } });
    expect(config.identity).toMatchObject({ user: { id: "uid" } });
    expect(config.authUrl).toBe("http://k:5000/v3");
  });

  test("OS_TENANT_NAME, OS_ENDPOINT_TYPE publicURL and openstack:insecure are understood", async () => {
    const config = await resolveCloudConfig(
      sources(
        { "openstack:insecure": "true" },
        {
          OS_AUTH_URL: "http://k:5000",
          OS_USERNAME: "u",
          OS_PASSWORD: "p",
          OS_TENANT_NAME: "t",
          OS_ENDPOINT_TYPE: "internalURL",
        },
      ),
    );
    expect(config).toMatchObject({ interface: "internal", insecure: true, scope: { project: { name: "t" } } });
  });

  test("OS_DOMAIN_NAME defaults the user's and project's domains; without any, Keystone's 'default'", () => {
    const both = cloudConfig({
      authUrl: "http://k/v3",
      userName: "u",
      password: "p",
      projectName: "pr",
      domainName: "Dom",
    });
    expect(both.identity).toMatchObject({ user: { domain: { name: "Dom" } } });
    expect(both.scope).toEqual({ project: { name: "pr", domain: { name: "Dom" } } });
    const none = cloudConfig({ authUrl: "http://k/v3", userName: "u", password: "p", projectName: "pr" });
    expect(none.scope).toEqual({ project: { name: "pr", domain: { id: "default" } } });
    const domainScoped = cloudConfig({ authUrl: "http://k/v3", userId: "u", password: "p", domainId: "d1" });
    expect(domainScoped.scope).toEqual({ domain: { id: "d1" } });
  });

  test("application credentials: by id, or by name with the user; the secret is listed for redaction", async () => {
    const byId = await resolveCloudConfig(
      sources(
        {},
        { OS_AUTH_URL: "http://k/v3", OS_APPLICATION_CREDENTIAL_ID: "ac1", OS_APPLICATION_CREDENTIAL_SECRET: "s3" },
      ),
    );
    expect(byId.identity).toEqual({ kind: "applicationCredential", credential: { id: "ac1" }, secret: "s3" });
    expect(byId.scope).toBeUndefined();
    expect(byId.secrets).toEqual(["s3"]);
    write(
      "cwd/clouds.yaml",
      "clouds:\n  ac:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: http://k/v3\n" +
        "      application_credential_name: backup\n      application_credential_secret: s4\n" +
        "      username: u\n      user_domain_id: default\n",
    );
    const byName = await resolveCloudConfig(sources({ "openstack:cloud": "ac" }, {}));
    expect(byName.identity).toEqual({
      kind: "applicationCredential",
      credential: { name: "backup", user: { name: "u", domain: { id: "default" } } },
      secret: "s4",
    });
  });

  test("the first source with any credential decides password vs application credential", async () => {
    const config = await resolveCloudConfig(
      sources(
        { "openstack:userName": "u", "openstack:password": "p", "openstack:tenantId": "pid" },
        { OS_AUTH_URL: "http://k/v3", OS_APPLICATION_CREDENTIAL_ID: "ac", OS_APPLICATION_CREDENTIAL_SECRET: "x" },
      ),
    );
    expect(config.identity.kind).toBe("password");
  });
});

describe("resolveCloudConfig: errors name the sources and keys to set", () => {
  test("no auth URL", async () => {
    await expect(resolveCloudConfig(sources({}, {}))).rejects.toMatchObject({
      code: "CLOUD_CONFIG_INVALID",
      message: "no auth URL: set openstack:authUrl, OS_AUTH_URL or auth.auth_url in clouds.yaml",
    });
  });

  test("no user, no password, no project, a secret-less application credential", async () => {
    const base = { OS_AUTH_URL: "http://k/v3" };
    await expect(resolveCloudConfig(sources({}, base))).rejects.toThrow(
      "no user: set openstack:userName, OS_USERNAME or auth.username in clouds.yaml",
    );
    await expect(resolveCloudConfig(sources({}, { ...base, OS_USERNAME: "u" }))).rejects.toThrow(
      /no password for user u: set openstack:password, OS_PASSWORD or auth.password in clouds.yaml/,
    );
    await expect(resolveCloudConfig(sources({}, { ...base, OS_USERNAME: "u", OS_PASSWORD: "p" }))).rejects.toThrow(
      /no project: set openstack:tenantName, OS_PROJECT_NAME, OS_TENANT_NAME or auth.project_name in clouds.yaml/,
    );
    await expect(resolveCloudConfig(sources({}, { ...base, OS_APPLICATION_CREDENTIAL_ID: "ac" }))).rejects.toThrow(
      /no application credential secret: set openstack:applicationCredentialSecret/,
    );
  });

  test("a bad value names where it came from; a missing clouds.yaml lists the places searched", async () => {
    await expect(
      resolveCloudConfig(
        sources(
          { "openstack:endpointType": "sideways" },
          { OS_AUTH_URL: "http://k/v3", OS_USER_ID: "u", OS_PASSWORD: "p", OS_PROJECT_ID: "x" },
        ),
      ),
    ).rejects.toThrow('openstack:endpointType is "sideways"; use public, internal or admin.');
    write("cwd/clouds.yaml", "clouds:\n  c:\n    auth:\n      auth_url: http://k/v2.0\n      username: u\n");
    await expect(
      resolveCloudConfig(sources({}, { OS_CLOUD: "c", OS_PASSWORD: "p", OS_PROJECT_ID: "x" })),
    ).rejects.toThrow(/auth.auth_url of cloud "c" in .*clouds.yaml is "http:\/\/k\/v2.0", Keystone's v2 API/);
  });

  test("a named cloud without any clouds.yaml lists the places searched", async () => {
    await expect(
      resolveCloudConfig(sources({ "openstack:cloud": "nowhere" }, { OS_CLIENT_CONFIG_FILE: "/nope.yaml" })),
    ).rejects.toThrow(/openstack:cloud names cloud "nowhere", but no clouds.yaml was found \(looked for \/nope.yaml, /);
  });

  test("a broken clouds.yaml is named without quoting its lines (which may hold passwords)", async () => {
    const file = write("cwd/clouds.yaml", "clouds:\n  c:\n    auth: {password: hunter2hunter2\n");
    const error = await resolveCloudConfig(sources({}, { OS_CLOUD: "c" })).catch((e: Error) => e);
    expect(error).toMatchObject({ code: "CLOUD_CONFIG_INVALID" });
    expect((error as Error).message).toContain(file);
    expect(JSON.stringify({ m: (error as Error).message, s: (error as Error).stack })).not.toContain("hunter2");
  });
});
