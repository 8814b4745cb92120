import { cloudConfig } from "../../provider/openstack/config";
import {
  collect,
  openCloud,
  waitForServer,
  waitForServerDeleted,
  type CloudError,
} from "../../provider/openstack/index";
import { FakeCloud, cinderError, novaUrl, projectId, type SeenRequest } from "../support/fakeOpenStack";

const config = cloudConfig({
  authUrl: "http://127.0.0.1:5000/v3",
  userName: "admin",
  password: "pw",
  projectName: "admin",
});
const created = "2026-11-26T12:00:00Z";

/** A server as Zed's Nova shows it to an admin at 2.79 (trimmed, with realistic extras). */
function server(id: string, extra: object = {}) {
  return {
    id,
    name: `s-${id}`,
    status: "ACTIVE",
    tenant_id: projectId,
    user_id: "u-1",
    flavor: { vcpus: 1, ram: 64, disk: 1, ephemeral: 0, swap: 0, original_name: "coffer.tiny", extra_specs: {} },
    image: { id: "img-1", links: [{ rel: "bookmark", href: "http://127.0.0.1:8774/images/img-1" }] },
    metadata: { coffer: "gold" },
    key_name: null,
    addresses: {},
    "os-extended-volumes:volumes_attached": [{ id: "v-1", delete_on_termination: false }],
    "OS-EXT-SRV-ATTR:user_data": Buffer.from("#cloud-config\n").toString("base64"),
    "OS-EXT-STS:vm_state": "active",
    "OS-EXT-STS:task_state": null,
    "OS-EXT-AZ:availability_zone": "nova",
    "OS-DCF:diskConfig": "MANUAL",
    hostId: "abc",
    created,
    updated: created,
    links: [],
    ...extra,
  };
}

function json(req: SeenRequest): Record<string, unknown> {
  return JSON.parse(req.body as string);
}

function setUp(microversion?: string) {
  const fake = new FakeCloud();
  return { fake, cloud: openCloud(config, fake.deps(), { novaMicroversion: microversion }) };
}

describe("nova", () => {
  test("reads a server with its flavor, image, metadata, volumes and user_data at 2.79", async () => {
    const { fake, cloud } = setUp();
    fake.on("GET", /^\/v2\.1\/servers\/s-1$/, () => ({
      json: { server: server("s-1", { security_groups: [{ name: "default" }] }) },
    }));
    const found = await cloud.nova.getServer("s-1");
    expect(found).toMatchObject({
      id: "s-1",
      status: "ACTIVE",
      flavor: { original_name: "coffer.tiny", ram: 64, disk: 1 },
      image: "img-1",
      metadata: { coffer: "gold" },
      security_groups: [{ name: "default" }],
      "os-extended-volumes:volumes_attached": [{ id: "v-1", delete_on_termination: false }],
    });
    expect(Buffer.from(found["OS-EXT-SRV-ATTR:user_data"] ?? "", "base64").toString()).toBe("#cloud-config\n");
    const [req] = fake.serviceRequests();
    expect(req.url.toString()).toBe(`${novaUrl}/servers/s-1`);
    expect(req.headers.get("openstack-api-version")).toBe("compute 2.79");
  });

  test('a server booted from a volume has image ""; before 2.47 the flavor is an id', async () => {
    const { fake, cloud } = setUp("2.1");
    fake.on("GET", /\/servers\/s-2$/, () => ({
      json: { server: server("s-2", { image: "", flavor: { id: "coffer-tiny", links: [] } }) },
    }));
    const found = await cloud.nova.getServer("s-2");
    expect(found.image).toBe("");
    expect(found.flavor.id).toBe("coffer-tiny");
    expect(fake.serviceRequests()[0].headers.get("openstack-api-version")).toBe("compute 2.1");
  });

  test("lists servers across pages with servers_links next, and passes filters", async () => {
    const { fake, cloud } = setUp();
    fake.on("GET", /\/servers\/detail$/, (req) =>
      req.url.searchParams.get("marker")
        ? { json: { servers: [server("s-3")] } }
        : {
            json: {
              servers: [server("s-1"), server("s-2")],
              servers_links: [
                { rel: "next", href: `http://nova.internal:8774/v2.1/servers/detail?limit=2&marker=s-2` },
              ],
            },
          },
    );
    const all = await collect(cloud.nova.listServers({ limit: 2, filters: { name: "^s-" } }));
    expect(all.map((s) => s.id)).toEqual(["s-1", "s-2", "s-3"]);
    expect(fake.serviceRequests().map((req) => req.url.toString())).toEqual([
      `${novaUrl}/servers/detail?name=%5Es-&limit=2`,
      `${novaUrl}/servers/detail?limit=2&marker=s-2`,
    ]);
  });

  test("creates a server without networks (>= 2.37), user_data in base64", async () => {
    const { fake, cloud } = setUp("2.1");
    fake.on("POST", /\/servers$/, () => ({ status: 202, json: { server: { id: "s-9", adminPass: "x", links: [] } } }));
    const options = { name: "web", imageId: "img-1", flavorId: "coffer-tiny", metadata: { a: "1" }, userData: "hi" };
    expect(await cloud.nova.createServer({ ...options, networks: "none" })).toEqual({ id: "s-9" });
    expect(await cloud.nova.createServer({ ...options, networks: [{ uuid: "net-1" }] })).toEqual({ id: "s-9" });
    const [none, withNetwork] = fake.serviceRequests();
    expect(json(none)).toEqual({
      server: {
        name: "web",
        imageRef: "img-1",
        flavorRef: "coffer-tiny",
        networks: "none",
        metadata: { a: "1" },
        user_data: Buffer.from("hi").toString("base64"),
      },
    });
    expect(none.headers.get("openstack-api-version")).toBe("compute 2.37");
    expect(withNetwork.headers.get("openstack-api-version")).toBe("compute 2.1");
  });

  test("createImage: the image id from the body (2.45+) or from Location (older)", async () => {
    const { fake, cloud } = setUp();
    fake.on("POST", /\/servers\/s-1\/action$/, () => ({ status: 202, json: { image_id: "img-new" } }));
    expect(await cloud.nova.createImage("s-1", { name: "snap", metadata: { coffer: "1" } })).toEqual({
      imageId: "img-new",
    });
    expect(json(fake.serviceRequests()[0])).toEqual({ createImage: { name: "snap", metadata: { coffer: "1" } } });

    const old = setUp("2.1");
    old.fake.on("POST", /\/servers\/s-1\/action$/, () => ({
      status: 202,
      raw: "",
      headers: { Location: "http://127.0.0.1:9292/images/img-old" },
    }));
    expect(await old.cloud.nova.createImage("s-1", { name: "snap" })).toEqual({ imageId: "img-old" });

    const neither = setUp("2.1");
    neither.fake.on("POST", /\/action$/, () => ({
      status: 202,
      raw: "",
      headers: { "x-compute-request-id": "req-c" },
    }));
    await expect(neither.cloud.nova.createImage("s-1", { name: "snap" })).rejects.toMatchObject({
      code: "CLOUD_BAD_RESPONSE",
      service: "nova",
      requestId: "req-c",
    });
  });

  test("volume attachments, delete, and errors named like the other services' with the request id", async () => {
    const { fake, cloud } = setUp();
    fake.on("GET", /\/servers\/s-1\/os-volume_attachments$/, () => ({
      json: {
        volumeAttachments: [
          { id: "v-1", volumeId: "v-1", serverId: "s-1", device: "/dev/vdb", tag: null, delete_on_termination: false },
        ],
      },
    }));
    fake.on("DELETE", /\/servers\/s-1$/, () => ({ status: 204 }));
    fake.on("GET", /\/servers\/gone$/, () => cinderError("itemNotFound", 404, "Instance gone could not be found."));
    expect(await cloud.nova.listVolumeAttachments("s-1")).toEqual([
      { id: "v-1", volumeId: "v-1", serverId: "s-1", device: "/dev/vdb", tag: null, delete_on_termination: false },
    ]);
    await cloud.nova.deleteServer("s-1");
    const error = (await cloud.nova.getServer("gone").catch((e: unknown) => e)) as CloudError;
    expect(error).toMatchObject({ code: "CLOUD_NOT_FOUND", service: "nova", status: 404, requestId: "req-404" });
    expect(error.message).toContain("Instance gone could not be found.");
  });

  test("waits for ACTIVE, fails at once on ERROR with the fault, and waits for a deletion", async () => {
    const { fake, cloud } = setUp();
    const waits = { timeoutMs: 60_000, deps: fake.deps() };
    const statuses = ["BUILD", "BUILD", "ACTIVE"];
    fake.on("GET", /\/servers\/s-1$/, () => ({ json: { server: server("s-1", { status: statuses.shift() }) } }));
    expect((await waitForServer(cloud.nova, "s-1", waits)).status).toBe("ACTIVE");

    const fault = { message: "Exceeded maximum number of retries.", code: 500 };
    fake.on("GET", /\/servers\/s-2$/, () => ({ json: { server: server("s-2", { status: "ERROR", fault }) } }));
    await expect(waitForServer(cloud.nova, "s-2", waits)).rejects.toMatchObject({
      code: "CLOUD_RESOURCE_FAILED",
      message: expect.stringContaining("Exceeded maximum number of retries."),
    });

    let deleting = 2;
    fake.on("GET", /\/servers\/s-3$/, () =>
      deleting-- > 0
        ? { json: { server: server("s-3", { status: "ERROR", "OS-EXT-STS:task_state": "deleting" }) } }
        : cinderError("itemNotFound", 404, "Instance s-3 could not be found."),
    );
    await waitForServerDeleted(cloud.nova, "s-3", waits);
  });
});
