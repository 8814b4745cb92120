import { endpointFor } from "../../provider/openstack/catalog";
import { cloudConfig, type CloudSettings } from "../../provider/openstack/config";
import { openCloud, openCloudFrom } from "../../provider/openstack/index";
import { authBody, type CatalogEntry } from "../../provider/openstack/keystone";
import { FakeCloud, cinderError, projectId } from "../support/fakeOpenStack";

const base: CloudSettings = {
  authUrl: "http://127.0.0.1:5000/v3",
  userName: "demo",
  password: "pw",
  projectName: "demo",
};
const volume = {
  id: "v-1",
  name: "data",
  status: "available",
  size: 1,
  bootable: "false",
  encrypted: false,
  created_at: "2026-11-26T12:00:00.000000",
};

describe("Keystone v3 authentication bodies", () => {
  test("password: user by name and domain, project scope by name and domain", () => {
    expect(authBody(cloudConfig({ ...base, userDomainName: "Default", projectDomainId: "default" }))).toEqual({
      auth: {
        identity: {
          methods: ["password"],
          password: { user: { name: "demo", domain: { name: "Default" }, password: "pw" } },
        },
        scope: { project: { name: "demo", domain: { id: "default" } } },
      },
    });
  });

  test("password: user by id, project by id; domain scope", () => {
    const byId = cloudConfig({ authUrl: base.authUrl, userId: "u1", password: "pw", projectId: "p1" });
    expect(authBody(byId)).toEqual({
      auth: {
        identity: { methods: ["password"], password: { user: { id: "u1", password: "pw" } } },
        scope: { project: { id: "p1" } },
      },
    });
    const domain = cloudConfig({ authUrl: base.authUrl, userId: "u1", password: "pw", domainName: "Ops" });
    expect((authBody(domain) as { auth: { scope: unknown } }).auth.scope).toEqual({ domain: { name: "Ops" } });
  });

  test("application credential by id, or by name with its user; never a scope", () => {
    const byId = cloudConfig({
      authUrl: base.authUrl,
      applicationCredentialId: "ac1",
      applicationCredentialSecret: "s",
    });
    expect(authBody(byId)).toEqual({
      auth: { identity: { methods: ["application_credential"], application_credential: { id: "ac1", secret: "s" } } },
    });
    const byName = cloudConfig({
      authUrl: base.authUrl,
      applicationCredentialName: "backups",
      applicationCredentialSecret: "s",
      userName: "demo",
      userDomainName: "Default",
      projectName: "ignored",
    });
    expect(authBody(byName)).toEqual({
      auth: {
        identity: {
          methods: ["application_credential"],
          application_credential: { name: "backups", user: { name: "demo", domain: { name: "Default" } }, secret: "s" },
        },
      },
    });
  });
});

describe("CloudSession tokens", () => {
  function setUp() {
    const fake = new FakeCloud();
    fake.on("GET", /\/volumes\/v-1$/, () => ({ json: { volume } }));
    return { fake, cloud: openCloud(cloudConfig(base), fake.deps()) };
  }

  test("the token from X-Subject-Token is sent as X-Auth-Token and reused while valid", async () => {
    const { fake, cloud } = setUp();
    await Promise.all([cloud.cinder.getVolume("v-1"), cloud.cinder.getVolume("v-1")]);
    fake.nowMs += 30 * 60_000;
    await cloud.cinder.getVolume("v-1");
    expect(fake.tokensIssued).toBe(1);
    const sent = fake.serviceRequests().map((req) => req.headers.get("x-auth-token"));
    expect(sent).toEqual(Array(3).fill(fake.tokens()[0]));
    expect(await cloud.session.projectId()).toBe(projectId);
  });

  test("shortly before expires_at, the session authenticates again", async () => {
    const { fake, cloud } = setUp();
    await cloud.cinder.getVolume("v-1");
    fake.nowMs += 3600_000 - 30_000; // 30 s before expiry
    await cloud.cinder.getVolume("v-1");
    expect(fake.tokensIssued).toBe(2);
    expect(fake.serviceRequests()[1].headers.get("x-auth-token")).toBe(fake.tokens()[1]);
  });

  test("a 401 from a service (token revoked) re-authenticates once and repeats the request", async () => {
    const { fake, cloud } = setUp();
    await cloud.cinder.getVolume("v-1");
    fake.on("GET", /\/volumes\/v-1$/, () => cinderError("unauthorized", 401, "revoked"), 1);
    expect((await cloud.cinder.getVolume("v-1")).id).toBe("v-1");
    expect(fake.tokensIssued).toBe(2);
    expect(fake.logLines.some((line) => line.includes("HTTP 401 with a token; authenticating again"))).toBe(true);
  });

  test("Keystone refusing the credentials is CLOUD_AUTH_FAILED naming the user and project", async () => {
    const fake = new FakeCloud();
    fake.on("POST", /auth\/tokens$/, () => ({
      status: 401,
      json: {
        error: { code: 401, message: "The request you have made requires authentication.", title: "Unauthorized" },
      },
      headers: { "x-openstack-request-id": "req-5e1f" },
    }));
    const error = await openCloud(cloudConfig(base), fake.deps())
      .cinder.getVolume("v-1")
      .catch((e: Error) => e);
    expect(error).toMatchObject({ code: "CLOUD_AUTH_FAILED", service: "keystone", status: 401, requestId: "req-5e1f" });
    expect((error as Error).message).toMatch(
      /^keystone token for user demo in project demo: HTTP 401 .*on POST \/v3\/auth\/tokens: The request you have/,
    );
    const sent = JSON.parse(fake.requests[0].body as string);
    expect(sent.auth.identity.password.user.password).toBe("pw");
  });
});

describe("the service catalog", () => {
  const endpoint = (iface: string, region: string, url: string) => ({ interface: iface, region_id: region, url });
  const catalog: CatalogEntry[] = [
    {
      type: "volumev3",
      endpoints: [
        endpoint("public", "RegionOne", "http://one:8776/v3/%(project_id)s"),
        endpoint("internal", "RegionOne", "http://one-int:8776/v3/$(project_id)s"),
        endpoint("public", "RegionTwo", "http://two:8776/v3/%(tenant_id)s"),
      ],
    },
    { type: "image", endpoints: [endpoint("public", "RegionOne", "http://img:9292")] },
  ];
  const query = { types: ["volumev3", "block-storage"], interface: "public" as const, projectId: "p1" };

  test("chooses by region and interface and fills in the project id", () => {
    expect(endpointFor(catalog, { ...query, region: "RegionOne" })).toBe("http://one:8776/v3/p1");
    expect(endpointFor(catalog, { ...query, region: "RegionTwo" })).toBe("http://two:8776/v3/p1");
    expect(endpointFor(catalog, { ...query, region: "RegionOne", interface: "internal" })).toBe(
      "http://one-int:8776/v3/p1",
    );
    expect(endpointFor(catalog, { ...query, types: ["image"] })).toBe("http://img:9292");
  });

  test("errors say what the catalog has and which setting to change", () => {
    expect(() => endpointFor(catalog, query)).toThrow(
      "the catalog has volumev3 endpoints in several regions (RegionOne, RegionTwo); set openstack:region",
    );
    expect(() => endpointFor(catalog, { ...query, region: "RegionThree" })).toThrow(
      "no volumev3 endpoint with interface public in region RegionThree (it has regions RegionOne, RegionTwo)",
    );
    expect(() => endpointFor(catalog, { ...query, types: ["key-manager"] })).toThrow(
      "the cloud's catalog has no key-manager service (it lists: volumev3, image).",
    );
  });

  test("a session uses the configured interface: openstack:endpointType internal", async () => {
    const fake = new FakeCloud();
    fake.on("GET", /\/volumes\/v-1$/, () => ({ json: { volume } }));
    const cloud = openCloud(cloudConfig({ ...base, endpointType: "internal" }), fake.deps());
    await cloud.cinder.getVolume("v-1");
    expect(fake.serviceRequests()[0].url.host).toBe("cinder.internal:8776");
    await expect(cloud.session.endpoint("glance")).rejects.toThrow(
      "the catalog has no image endpoint with interface internal (it has none with that interface).",
    );
    const publicCloud = openCloud(cloudConfig(base), fake.deps());
    expect(await publicCloud.session.endpoint("glance")).toBe("http://127.0.0.1:9292/v2");
    expect(await publicCloud.session.endpoint("barbican")).toBe("http://127.0.0.1:9311/v1");
  });
});

describe("openCloud and openCloudFrom", () => {
  test("TLS settings that Node's fetch cannot apply are refused, not ignored", () => {
    expect(() => openCloud(cloudConfig({ ...base, insecure: "true" }))).toThrow(
      /openstack:insecure .* is set, which Coffer's OpenStack client cannot apply/,
    );
    expect(() => openCloud(cloudConfig({ ...base, cacertFile: "/nonexistent/ca.pem" }))).toThrow(
      /NODE_EXTRA_CA_CERTS set to the same file/,
    );
    const fake = new FakeCloud();
    expect(() => openCloud(cloudConfig({ ...base, insecure: "true" }), fake.deps())).not.toThrow();
  });

  test("openCloudFrom resolves the stack's openstack:* keys, then authenticates on first use", async () => {
    const fake = new FakeCloud();
    fake.on("GET", /\/volumes\/v-1$/, () => ({ json: { volume } }));
    const stack: Record<string, string> = {
      "openstack:authUrl": "http://127.0.0.1:5000/v3",
      "openstack:userName": "demo",
      "openstack:password": "pw",
      "openstack:tenantName": "demo",
    };
    const cloud = await openCloudFrom({ stack: (key) => stack[key], env: {} }, fake.deps());
    expect(fake.requests).toHaveLength(0);
    await cloud.cinder.getVolume("v-1");
    expect(fake.tokensIssued).toBe(1);
  });
});
