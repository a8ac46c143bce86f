/**
 * Differential test of the key template engine against Go's own
 * text/template: a broad corpus of templates is rendered by a small Go
 * program (tests/fixtures/gotemplate, standard library only, Debian's
 * golang-go installed on first use by scripts/install/go.sh) and by ours,
 * over the same metadata and the Go plugin's helpers (`checksum`, `arch`,
 * `os`). Both must agree on the output, on whether parsing fails and on
 * whether execution fails; the keys `renderKey` derives must be the Go
 * plugin's (rendered output, or its fallback key on an execution error).
 */
import { assertEquals } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";
import { keyFunctions } from "../lib/key/helpers.ts";
import { templateData } from "../lib/key/metadata.ts";
import {
  GoStruct,
  parseTemplate,
  TemplateExecError,
  TemplateSyntaxError,
  type Value,
} from "../lib/key/template.ts";
import { defaultKey, renderKey } from "../lib/key/key.ts";
import { run, tempDir } from "./fixtures/archive/helpers.ts";
import { buildGoFixture } from "./fixtures/go.ts";

function toJson(v: Value): unknown {
  if (v instanceof GoStruct) return Object.fromEntries([...v.fields].map(([k, x]) => [k, toJson(x)]));
  return typeof v === "bigint" ? Number(v) : v;
}

const ENV = {
  DRONE_REPO_NAME: "webapp",
  DRONE_REPO_OWNER: "acme",
  DRONE_REPO_NAMESPACE: "acme",
  DRONE_REPO_BRANCH: "main",
  DRONE_REPO_PRIVATE: "true",
  DRONE_COMMIT_BRANCH: "feature/Login-Form",
  DRONE_COMMIT_SHA: "0123456789abcdef0123456789abcdef01234567",
  DRONE_COMMIT_MESSAGE: "Fix: <b>bold</b> & \"quotes\" 'single'\nsecond line",
  DRONE_COMMIT_AUTHOR: "Dev Eloper",
  DRONE_COMMIT_AUTHOR_EMAIL: "dev@example.com",
  DRONE_BUILD_NUMBER: "42",
  DRONE_BUILD_CREATED: "1700000000",
  DRONE_BUILD_EVENT: "pull_request",
  DRONE_REMOTE_URL: "https://git.example.com/acme/webapp.git",
};

/** The corpus: what pipelines write, and what Go's text/template accepts at its edges. */
const CORPUS = [
  "",
  "plain-key",
  "{{ .Repo.Name }}",
  "{{ .Repo.Name }}-{{ .Commit.Branch }}",
  "{{ .Repo.Owner }}/{{ .Repo.Name }}/{{ .Build.Number }}",
  "{{ .Repo.Private }}-{{ .Repo.Trusted }}",
  "{{ .Build.Created }}-{{ .Build.Started }}-{{ .Build.Finished }}",
  "{{ .Commit.Author }}",
  "{{ .Commit.Author.Name }}-{{ .Commit.Author.Email }}",
  "{{ .Commit.Message }}",
  "{{ .Build }}",
  "{{ . }}",
  '{{ .Repo.Name }}-{{ checksum "go.sum" }}',
  '{{ .Repo.Name }}-{{ checksum "no-such-file" }}-end',
  '{{ checksum "sub/lock.json" }}',
  "{{ arch }}-{{ os }}",
  "{{ .Repo.Name }}_{{ arch }}_{{ os }}",
  "{{ .Repo.Nope }}",
  "{{ .Repo.Name.Length }}",
  "{{ .Nope }}",
  "{{ nope }}",
  "{{ .Repo.Name",
  "{{ .Repo.Name }",
  "{{ if }}{{ end }}",
  "{{ end }}",
  "{{ else }}",
  "{{ if .Repo.Private }}private{{ else }}public{{ end }}",
  '{{ if eq .Build.Event "push" }}push{{ else if eq .Build.Event "pull_request" }}pr{{ else }}other{{ end }}',
  "{{ if and .Repo.Private (eq .Build.Number 42) }}yes{{ end }}",
  '{{ if or .Repo.Trusted (ne .Repo.Name "x") }}yes{{ end }}',
  "{{ if not .Repo.Trusted }}untrusted{{ end }}",
  "{{ with .Commit }}{{ .Branch }}@{{ .Sha }}{{ end }}",
  "{{ with .Build.Deploy }}deploy-{{ . }}{{ else }}no-deploy{{ end }}",
  "{{ with $x := .Repo.Name }}{{ $x }}{{ $ }}{{ end }}",
  "{{ $b := .Commit.Branch }}{{ $b }}-{{ $b }}",
  "{{ $n := 1 }}{{ $n = 2 }}{{ $n }}",
  "{{ $undefined }}",
  '{{ printf "%s-%d" .Repo.Name .Build.Number }}',
  '{{ printf "%05d|%x|%X|%o|%q" .Build.Number .Build.Number .Build.Number .Build.Number .Repo.Name }}',
  '{{ printf "%v %+v" .Commit.Author .Commit.Author }}',
  '{{ printf "%.3s" .Commit.Sha }}',
  '{{ printf "%8.2f|%-8s|%t" 3.14159 .Repo.Name true }}',
  '{{ printf "%d" .Repo.Name }}',
  '{{ printf "%s" }}',
  '{{ printf "%e %g" 12345.678 0.000012 }}',
  '{{ print .Repo.Name 1 2 "x" true }}',
  "{{ println .Repo.Name }}",
  '{{ .Repo.Name | printf "%s-suffix" }}',
  "{{ .Repo.Name | len }}",
  "{{ len .Commit.Sha }}",
  "{{ index .Commit.Sha 0 }}",
  "{{ index .Commit.Sha 99 }}",
  "{{ slice .Commit.Sha 0 7 }}",
  "{{ slice .Commit.Sha 3 }}",
  "{{ slice .Commit.Sha 7 3 }}",
  "{{ urlquery .Commit.Branch }}",
  "{{ html .Commit.Message }}",
  "{{ js .Commit.Message }}",
  "{{ eq .Build.Number 42 }}-{{ lt .Build.Number 100 }}-{{ ge .Build.Number 42 }}-{{ gt 1 2 }}-{{ le 2 2 }}",
  '{{ eq .Repo.Name "webapp" "other" }}',
  "{{ eq .Repo.Name 1 }}",
  '{{ lt .Repo.Name "x" }}',
  '{{ and 1 0 "x" }}|{{ or 0 "" "z" }}',
  '{{ not 0 }}|{{ not "" }}',
  "{{ 1 }}-{{ 1.5 }}-{{ 0x1F }}-{{ 1e3 }}-{{ 'a' }}-{{ true }}-{{ nil }}",
  "{{ -5 }}|{{ +5 }}|{{ 0o17 }}|{{ 0b101 }}|{{ 1_000 }}",
  '{{ "esc\\t\\u00e9\\x41" }}|{{ `raw\\n` }}',
  "{{/* a comment */}}key",
  "{{- .Repo.Name -}} - {{- .Commit.Branch -}}",
  "a {{- /* trimmed */ -}} b",
  '{{ (.Repo.Name) }}-{{ (printf "%s" .Repo.Owner) }}',
  '{{ (len .Repo.Name) | printf "%03d" }}',
  "{{ call .Repo.Name }}",
  "{{ .Repo.Name | html | urlquery }}",
  '{{ define "base" }}{{ .Name }}-base{{ end }}{{ template "base" .Repo }}',
  '{{ define "t" }}T{{ end }}{{ template "t" }}-{{ template "t" }}',
  '{{ template "missing" }}',
  '{{ block "b" .Commit }}{{ .Branch }}{{ end }}-after',
  '{{ define "x" }}1{{ end }}{{ define "x" }}2{{ end }}{{ template "x" }}',
  '{{ if true }}{{ define "x" }}1{{ end }}{{ end }}',
  '{{ define "v" }}{{ $ }}{{ end }}{{ $y := 1 }}{{ template "v" .Build.Number }}',
  '{{ define "e" }}{{ .Nope }}{{ end }}{{ template "e" .Repo }}',
  '{{ block "b" }}x{{ end }}',
  "{{ range .Repo.Name }}x{{ end }}",
  "{{ range nil }}x{{ else }}empty{{ end }}",
  "{{ range $i, $e := .Repo.Private }}{{ $i }}{{ end }}",
  "{{ range .Build }}{{ break }}{{ end }}",
  "{{ break }}",
  "{{ range nil }}{{ continue }}{{ else }}e{{ end }}",
  "{{ .Repo.Name }}/{{ .Commit.Branch }}/../x",
  '{{ "" }}',
  "{{ if false }}x{{ end }}",
  "{{ eq .Build.Number .Build.Created }}|{{ lt .Build.Created 5 }}|{{ eq .Build.Created 1700000000 }}",
  '{{ printf "%T %T %T %T" .Build.Number .Build.Created .Repo.Private .Repo }}',
  '{{ printf "%v|%s" nil .Repo }}',
  '{{ printf "%q" .Commit.Message }}',
  '{{ printf "%x" .Repo.Name }}|{{ printf "% x" .Repo.Name }}|{{ printf "%#x" 255 }}',
  '{{ printf "%6.2f|%-6d|%+d|%c|%U" 3.14159 42 42 65 65 }}',
  '{{ printf "%!" }}|{{ printf "%d %d" 1 }}|{{ printf "%d" 1 2 }}',
  String.raw`{{ html "<a href='x'>&</a>" }}|{{ js "a\u2028b'c\"d<e>" }}|{{ urlquery "a b&c=d/é" }}`,
  '{{ print nil }}|{{ print 1 2 }}|{{ print "a" "b" }}|{{ println 1 "a" }}',
  "{{ len 5 }}",
  "{{ index .Repo 0 }}",
  '{{ not .Repo }}|{{ and .Repo .Build }}|{{ or "" .Commit.Author }}',
  "{{ if .Commit.Author }}author{{ end }}",
  "{{ with .Repo.Trusted }}t{{ else }}f{{ end }}",
  '{{ .Commit.Author.Name | printf "%s" | len | printf "%d-chars" }}',
  "{{ $x := .Repo }}{{ $x.Name }}-{{ $x.Owner }}",
  "{{ $.Repo.Name }}",
  "{{ (.Commit).Branch }}",
  "{{ .Commit.Branch | urlquery | html }}",
  "{{ 3.0 }}|{{ 1e6 }}|{{ 1e21 }}|{{ 0.000001 }}|{{ 1.5e-7 }}|{{ 100000000000000000000.0 }}",
  "{{ 9223372036854775807 }}|{{ -9223372036854775808 }}",
  "{{ 9223372036854775808 }}",
  String.raw`{{ 'x' }}|{{ '\n' }}|{{ '\u00e9' }}`,
  "  {{- .Repo.Name -}}  \n  {{- .Repo.Owner }}",
  '{{ define "a" }}A{{ template "b" . }}{{ end }}{{ define "b" }}B{{ .Name }}{{ end }}{{ template "a" .Repo }}',
  '{{ template "x" }}{{ define "x" }}late{{ end }}',
  '{{ block "k" .Build.Number }}{{ . }}{{ end }}{{ define "k" }}override{{ end }}',
  '{{ define "k" }}{{ end }}{{ block "k" 1 }}body{{ end }}',
  '{{ slice "abc" 1 2 3 }}',
  "{{ call nil }}",
  "{{ .Repo.Name.Foo }}",
  "{{ $ := 1 }}",
  "{{ else if }}",
  "{{ with $x := 0 }}{{ else }}{{ $x }}{{ end }}",
];

/**
 * Where ours is known to differ, and why: the engine has one integer type, so `%T` prints `int` for the
 * int64 fields (`.Build.Created`, `.Started`, `.Finished`); their values print the same.
 */
const KNOWN_DIFFERENCES = ['{{ printf "%T %T %T %T" .Build.Number .Build.Created .Repo.Private .Repo }}'];

Deno.test({
  name: "key differential: Go's text/template and ours agree over the corpus (output, parse and exec errors)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { dir, cleanup } = await tempDir("keydiff");
    try {
      const bin = await buildGoFixture("gotemplate", dir);
      await Deno.writeTextFile(`${dir}/go.sum`, "module deps\n");
      await Deno.mkdir(`${dir}/sub`);
      await Deno.writeTextFile(`${dir}/sub/lock.json`, "{}\n");
      const settings = settingsFrom(ENV);
      const data = templateData(settings);
      const input = new TextEncoder().encode(JSON.stringify({ data: toJson(data), templates: CORPUS }));
      const go = await run(bin, [], { cwd: dir, stdin: input });
      assertEquals(go.code, 0, go.stderr);
      const expected = JSON.parse(go.stdout) as { out: string; parseError?: string; execError?: string }[];
      assertEquals(expected.length, CORPUS.length);
      const differences: string[] = [];
      for (const [i, text] of CORPUS.entries()) {
        const want = expected[i];
        let got: { out: string; parseError?: string; execError?: string };
        try {
          const t = parseTemplate(text, {
            name: "cacheKey",
            funcs: keyFunctions({ log: capture().log, cwd: dir }),
          });
          try {
            got = { out: await t.execute(data) };
          } catch (err) {
            if (!(err instanceof TemplateExecError)) throw err;
            got = { out: "", execError: err.message };
          }
        } catch (err) {
          if (!(err instanceof TemplateSyntaxError)) throw err;
          got = { out: "", parseError: err.message };
        }
        const kind = (r: typeof got) => r.parseError ? "parse error" : r.execError ? "exec error" : "ok";
        if (Deno.env.get("KEYDIFF_MESSAGES") && (want.execError ?? "") !== (got.execError ?? "")) {
          console.log(`${JSON.stringify(text)}\n  go:   ${want.execError}\n  ours: ${got.execError}`);
        }
        if (kind(got) !== kind(want) || (kind(want) === "ok" && got.out !== want.out)) {
          differences.push(
            `${JSON.stringify(text)}: Go ${kind(want)} ${JSON.stringify(want.out)} ${
              want.parseError ?? want.execError ?? ""
            }` +
              ` | ours ${kind(got)} ${JSON.stringify(got.out)} ${got.parseError ?? got.execError ?? ""}`,
          );
        }
      }
      assertEquals(
        differences.map((d) => d.slice(0, d.indexOf(": Go "))),
        KNOWN_DIFFERENCES.map((t) => JSON.stringify(t)),
        `templates where ours and Go's differ:\n${differences.join("\n")}`,
      );

      // The keys: Go plugin = rendered output, or the fallback key when execution fails.
      const cwd = Deno.cwd();
      Deno.chdir(dir); // checksum resolves against the process working directory, as in the Go plugin
      try {
        for (const [i, text] of CORPUS.entries()) {
          if (expected[i].parseError || KNOWN_DIFFERENCES.includes(text)) continue;
          const s = settingsFrom({ ...ENV, PLUGIN_CACHE_KEY: text });
          const want = text === "" ? defaultKey(s) : expected[i].execError ? defaultKey(s) : expected[i].out;
          assertEquals(await renderKey(s, capture().log), want, `key of ${JSON.stringify(text)}`);
        }
      } finally {
        Deno.chdir(cwd);
      }
    } finally {
      await cleanup();
    }
  },
});
