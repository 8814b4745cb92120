import { CofferError } from "../common/errors";

/** One page: its items and the link to the next page, if any (a URL or a path with a query). */
export interface Page<T> {
  readonly items: readonly T[];
  readonly next?: string;
}

/**
 * Every item of a paginated listing. `fetchPage(query)` gets the first page with `query` undefined,
 * then each next page with the query string of the previous page's next link (Cinder's
 * `*_links` rel=next, Glance's `next`, Barbican's `next`). Only the query is taken from the link,
 * so a link that names an internal host name still lands on the endpoint from the catalog.
 */
export async function* paginate<T>(
  fetchPage: (query: URLSearchParams | undefined) => Promise<Page<T>>,
  what: string,
): AsyncGenerator<T> {
  const seen = new Set<string>();
  let query: URLSearchParams | undefined;
  for (;;) {
    const page = await fetchPage(query);
    yield* page.items;
    if (!page.next || page.items.length === 0) return;
    query = new URL(page.next, "http://relative.invalid").searchParams;
    const key = query.toString();
    if (seen.has(key)) {
      throw new CofferError("CLOUD_BAD_RESPONSE", `listing ${what}: the next-page link repeats (${key}); giving up.`);
    }
    seen.add(key);
  }
}

/** The rel=next href from a Cinder-style `*_links` array. */
export function nextLink(links: readonly { rel: string; href: string }[] | null | undefined): string | undefined {
  return links?.find((link) => link.rel === "next")?.href;
}

/** `path` with `query` appended, keeping any query `path` already has unless `query` overrides it. */
export function withQuery(path: string, query: URLSearchParams | Record<string, string | number | undefined>): string {
  const [base, existing] = path.split("?", 2);
  const params = new URLSearchParams(existing);
  const entries = query instanceof URLSearchParams ? [...query.entries()] : Object.entries(query);
  for (const [key, value] of entries) if (value !== undefined) params.set(key, String(value));
  const text = params.toString();
  return text ? `${base}?${text}` : base;
}

/** Collects an async iterable (Node 20 has no Array.fromAsync). */
export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}
