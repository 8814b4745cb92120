import { cloudDeps } from "../../provider/openstack/deps";
import { SwiftStore, tempAuth } from "../../provider/targets/swift";

// The retry rules of SwiftStore, with Swift's answers scripted (what a real cluster rarely does on cue);
// everything else about it runs against a real cluster in test/swift.

const key = "tempauth-key-5c1e";
const token = "AUTH_tk5c1e0000000000000000000000";

/** A fetch that answers tempauth, then the scripted statuses for object requests, in order. */
function scripted(statuses: number[]) {
  const requests: { method: string; url: string; body?: string }[] = [];
  const fetch = async (url: string, init: RequestInit): Promise<Response> => {
    if (url.endsWith("/auth/v1.0")) {
      return new Response(null, {
        status: 200,
        headers: { "X-Auth-Token": token, "X-Storage-Url": "http://swift.test/v1/AUTH_t" },
      });
    }
    requests.push({
      method: init.method ?? "GET",
      url,
      body: init.body ? Buffer.from(init.body as Uint8Array).toString("utf8") : undefined,
    });
    const status = statuses.shift() ?? 201;
    return new Response(status === 201 ? null : `status ${status}`, { status, headers: { Etag: "" } });
  };
  const deps = cloudDeps({ fetch, sleep: async () => undefined });
  const store = new SwiftStore({
    auth: tempAuth({ authUrl: "http://swift.test/auth/v1.0", user: "t:u", key, deps }),
    container: "c",
    prefix: "p",
    maxRetries: 2,
    deps,
  });
  return { store, requests };
}

describe("SwiftStore's retries", () => {
  test("a write Swift answers 503 is sent again, whole, and succeeds", async () => {
    const { store, requests } = scripted([503, 503, 201]);
    await store.writeTextAtomic("a/doc.json", "the text");
    expect(requests.map((r) => [r.method, r.url, r.body])).toEqual(
      Array(3).fill(["PUT", "http://swift.test/v1/AUTH_t/c/p/a/doc.json", "the text"]),
    );
  });

  test("an exclusive write is never sent twice: a second try would find its own object", async () => {
    const { store, requests } = scripted([503]);
    const error = await store.writeTextExclusive("claim.json", "mine").catch((e) => e);
    expect(error.message).toMatch(/^swift object claim\.json: HTTP 503/);
    expect(requests).toHaveLength(1);
  });

  test("after the retries, the error names the key and the status, and neither the key nor the token", async () => {
    const { store, requests } = scripted([500, 502, 504]);
    const error = await store.readText("sets/doc.json").catch((e) => e);
    expect(requests).toHaveLength(3);
    expect(error.code).toBe("CLOUD_UNAVAILABLE");
    expect(error.message).toContain("swift object sets/doc.json: HTTP 504");
    expect(JSON.stringify({ message: error.message, stack: error.stack })).not.toMatch(new RegExp(`${key}|${token}`));
  });

  test("a 404 is an answer, not a failure: no retry", async () => {
    const { store, requests } = scripted([404]);
    expect(await store.readText("none.json")).toBeUndefined();
    expect(requests).toHaveLength(1);
  });
});
