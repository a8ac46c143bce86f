import { assertEquals, assertStringIncludes, assertThrows } from "./assert.ts";
import { expandMount, keyPrefix, mountObjectPath, objectName } from "../lib/cache/layout.ts";
import { SettingsError } from "../lib/settings.ts";

Deno.test("layout: object names as the Go plugin (A§2.4)", () => {
  assertEquals(objectName("", "abc", "vendor", {}), "abc/vendor");
  assertEquals(objectName("", "abc", "./node_modules", {}), "abc/node_modules");
  assertEquals(objectName("", "abc", "/root/.m2/repository", {}), "abc/root/.m2/repository");
  assertEquals(objectName("", "repo/abc", "vendor", {}), "repo/abc/vendor");
  assertEquals(objectName("", "abc", "a//b/./c/", {}), "abc/a/b/c");
  assertEquals(objectName("", "abc", "a/x/../b", {}), "abc/a/b");
});

Deno.test("layout: remote root prefixes every object", () => {
  assertEquals(objectName("team", "abc", "vendor", {}), "team/abc/vendor");
  assertEquals(objectName("/team/", "abc", "vendor", {}), "team/abc/vendor");
  assertEquals(keyPrefix("", "/abc/"), "abc");
});

Deno.test("layout: .. that climbs out is a settings error", () => {
  let e = assertThrows(() => objectName("", "abc", "../shared", {}), SettingsError);
  assertStringIncludes(e.message, "../shared");
  e = assertThrows(() => objectName("", "../abc", "vendor", {}), SettingsError);
  assertStringIncludes(e.message, "cache key");
  assertThrows(() => objectName("", "abc", ".", {}), SettingsError);
  assertThrows(() => keyPrefix("", ""), SettingsError);
});

Deno.test("layout: ~ and $VAR expansion as the Go plugin", () => {
  assertEquals(expandMount("~/.cache", { HOME: "/root" }), "/root/.cache");
  assertEquals(expandMount("$GOPATH/pkg/mod", { GOPATH: "/go" }), "/go/pkg/mod");
  assertEquals(expandMount("${GOPATH}/pkg", { GOPATH: "/go" }), "/go/pkg");
  assertEquals(expandMount("$UNSET/x", {}), "/x");
  assertEquals(objectName("", "k", expandMount("~/.cache", { HOME: "/root" }), {}), "k/root/.cache");
});

Deno.test("layout: Harness docker stage paths become docker/ in the object name", () => {
  const env = { DRONE_STAGE_TYPE: "DOCKER" };
  assertEquals(mountObjectPath("/tmp/harness/abc-uuid/.gradle", env), "docker/.gradle");
  assertEquals(mountObjectPath("/tmp/harness/abc-uuid/.gradle", {}), "tmp/harness/abc-uuid/.gradle");
});
