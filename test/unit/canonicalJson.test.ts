import { canonicalJson } from "../../provider/common/canonicalJson";

describe("canonicalJson (the bytes manifest HMACs cover)", () => {
  test("sorts keys at every depth by code unit, keeps array order, drops undefined", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, Y: 2 }], c: undefined }, A: null })).toBe(
      '{"A":null,"a":{"d":[3,{"Y":2,"z":1}]},"b":1}',
    );
  });

  test("equal values in any key order give the same text", () => {
    expect(canonicalJson({ x: 1, y: { p: true, q: "s" } })).toBe(canonicalJson({ y: { q: "s", p: true }, x: 1 }));
  });
});
