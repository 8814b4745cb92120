/**
 * The pack `pulumi preview --policy-pack <coffer>/policy-pack` runs (policy-pack/package.json's main):
 * constructing a PolicyPack starts its analyzer server, so nothing else imports this module.
 */
import { PolicyPack } from "@pulumi/policy";
import { cofferPolicies } from "./index";

new PolicyPack("coffer", { policies: cofferPolicies });
