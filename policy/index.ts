/**
 * The policy pack's entry point: constructing a PolicyPack starts its analyzer server, so only
 * `pulumi preview|up --policy-pack <coffer>/policy-pack` loads this module (policy-pack/package.json).
 */
import { PolicyPack } from "@pulumi/policy";
import { cofferPolicies } from "./rules";

new PolicyPack("coffer", { policies: cofferPolicies });
