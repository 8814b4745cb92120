/**
 * JSON with object keys sorted (by code unit) at every depth: equal values give equal text.
 * Manifest HMACs cover these exact bytes, so its output must never change.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}
