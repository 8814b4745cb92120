import { CofferError } from "../common/errors";
import type { EndpointInterface } from "./config";
import type { CatalogEntry } from "./keystone";

export interface EndpointQuery {
  /** Catalog service types to try in order, e.g. ["volumev3", "block-storage"]. */
  readonly types: readonly string[];
  readonly interface: EndpointInterface;
  readonly region?: string;
  readonly projectId?: string;
}

/** The endpoint URL for a service from a token's catalog, with `%(project_id)s` filled in. */
export function endpointFor(catalog: readonly CatalogEntry[], query: EndpointQuery): string {
  const entries = query.types.flatMap((type) => catalog.filter((entry) => entry.type === type));
  const type = entries.length ? entries[0].type : query.types[0];
  if (entries.length === 0) {
    const types = catalog.map((entry) => entry.type).join(", ") || "nothing";
    throw new CofferError(
      "CLOUD_NOT_FOUND",
      `the cloud's catalog has no ${query.types.join(" or ")} service (it lists: ${types}). ` +
        "The service is not deployed, or the user's token is not scoped to a project.",
    );
  }
  const endpoints = entries[0].endpoints.filter((endpoint) => endpoint.interface === query.interface);
  const inRegion = query.region
    ? endpoints.filter((endpoint) => endpoint.region_id === query.region || endpoint.region === query.region)
    : endpoints;
  const regions = [...new Set(endpoints.map((endpoint) => endpoint.region_id ?? endpoint.region ?? "(none)"))];
  if (inRegion.length === 0) {
    const found = endpoints.length ? `it has regions ${regions.join(", ")}` : "it has none with that interface";
    throw new CofferError(
      "CLOUD_CONFIG_INVALID",
      `the catalog has no ${type} endpoint with interface ${query.interface}` +
        `${query.region ? ` in region ${query.region}` : ""} (${found}). ` +
        "Set openstack:region (OS_REGION_NAME) and openstack:endpointType (OS_INTERFACE) to ones the cloud has.",
    );
  }
  if (!query.region && regions.length > 1) {
    throw new CofferError(
      "CLOUD_CONFIG_INVALID",
      `the catalog has ${type} endpoints in several regions (${regions.join(", ")}); ` +
        "set openstack:region (OS_REGION_NAME) to the one to use.",
    );
  }
  return substituteProject(inRegion[0].url, query.projectId);
}

function substituteProject(url: string, projectId: string | undefined): string {
  const pattern = /[%$]\((project_id|tenant_id)\)s/g;
  if (!pattern.test(url)) return url;
  if (!projectId) {
    throw new CofferError(
      "CLOUD_CONFIG_INVALID",
      `the endpoint ${url} needs a project, but the token has none; scope it to a project (openstack:tenantName).`,
    );
  }
  return url.replace(pattern, projectId);
}
