/**
 * Table tests of the Go text/template subset (`lib/key/template.ts`). The
 * expected outputs and messages are what Go's text/template and fmt produce
 * for the same template and data (checked against Go 1.19 by running these
 * tables through a Go program; syntax errors add the column, which Go's
 * parse errors leave out). `{{else with}}` is Go 1.23+.
 */
import {
  type FuncMap,
  GoStruct,
  parseTemplate,
  sprintf,
  TemplateExecError,
  TemplateSyntaxError,
} from "../lib/key/template.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";

const data = new GoStruct("metadata.Metadata", {
  Repo: new GoStruct("metadata.Repo", { Name: "app", Owner: "acme", Private: false }),
  Build: new GoStruct("metadata.Build", { Number: 42n, Event: "push", Deploy: "" }),
  Commit: new GoStruct("metadata.Commit", {
    Branch: "main",
    Author: new GoStruct("metadata.Author", { Avatar: "avatar-url", Email: "dev@example.com", Name: "Dev" }),
  }),
});

const funcs: FuncMap = {
  upper: { params: ["string"], call: (s) => (s as string).toUpperCase() },
  twice: { params: ["string"], call: (s) => (s as string) + (s as string) },
  fail: {
    params: [],
    call: () => {
      throw new Error("boom");
    },
  },
  later: { params: [], call: () => Promise.resolve("async") },
};

async function render(template: string): Promise<string> {
  return await parseTemplate(template, { name: "key", funcs }).execute(data);
}

async function table(cases: [string, string][]): Promise<void> {
  for (const [template, expected] of cases) {
    assertEquals(await render(template), expected, `template ${JSON.stringify(template)}`);
  }
}

Deno.test("literal text and fields", async () => {
  await table([
    ["", ""],
    ["plain-key_1.0", "plain-key_1.0"],
    ["{{ .Repo.Name }}", "app"],
    ["{{.Repo.Name}}-{{.Commit.Branch}}", "app-main"],
    ["{{ .Commit.Author.Email }}", "dev@example.com"],
    ["{{ .Repo.Private }}/{{ .Build.Number }}", "false/42"],
    ["{{ .Commit.Author }}", "{avatar-url dev@example.com Dev}"],
    ["{{ with .Commit }}{{ $.Repo.Name }}-{{ .Branch }}{{ end }}", "app-main"],
    ["{{ .Repo.Name }}\n{{ .Commit.Branch }}\n", "app\nmain\n"],
    ["{{ .Repo.Name | }}", "app"],
    ["a}}b{", "a}}b{"],
  ]);
});

Deno.test("pipes, function calls and parenthesised pipelines", async () => {
  await table([
    ["{{ .Commit.Branch | upper }}", "MAIN"],
    ["{{ .Commit.Branch | upper | twice }}", "MAINMAIN"],
    // The piped value is the LAST argument, as in Go.
    ['{{ "a" | printf "%s-%s" "b" }}', "b-a"],
    ['{{ .Build.Number | printf "%s-%05d" .Repo.Name }}', "app-00042"],
    ['{{ printf "%s/%s" (.Commit.Branch) (printf "%d" .Build.Number) }}', "main/42"],
    ["{{ twice (upper .Repo.Name) }}", "APPAPP"],
    ['{{ printf "%s-%s" later later }}', "async-async"],
    ["{{ (.Commit.Author).Name }}", "Dev"],
    ['{{ $b := .Commit.Branch }}{{ $b }}-{{ $b | upper }}{{ $b = "x" }}{{ $b }}', "main-MAINx"],
  ]);
});

Deno.test("literals: strings with Go escapes, raw strings, numbers, bools", async () => {
  await table([
    ['{{ "tab\\there" }}', "tab\there"],
    ['{{ "\\x41\\101\\u00e9\\U0001F600" }}', "AAé😀"],
    ['{{ "q\\"uote\\\\" }}', 'q"uote\\'],
    ['{{ "\\a\\b\\f\\n\\r\\v" }}', "\x07\b\f\n\r\v"],
    ["{{ `raw \\n {{ not an action }}` }}", "raw \\n {{ not an action }}"],
    ["{{ `multi\nline` }}", "multi\nline"],
    [
      "{{ 42 }} {{ -3 }} {{ +7 }} {{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1_000 }}",
      "42 -3 7 31 15 15 5 1000",
    ],
    [
      "{{ 1.5 }} {{ 2.0 }} {{ 1e6 }} {{ 1e-5 }} {{ 0.0001 }} {{ 123456.0 }} {{ .5 }}",
      "1.5 2 1e+06 1e-05 0.0001 123456 0.5",
    ],
    ["{{ 'a' }} {{ '\\n' }} {{ 'é' }}", "97 10 233"],
    ["{{ true }} {{ false }}", "true false"],
  ]);
});

Deno.test("trim markers {{- and -}} trim all adjacent white space, as Go", async () => {
  await table([
    ["a  {{- 3 -}}  b", "a3b"],
    ["a \n\t {{- 3 }} b", "a3 b"],
    ["a {{ 3 -}} \n\t b", "a 3b"],
    ["a\n{{- .Repo.Name -}}\n\tb", "aappb"],
    ["{{-3}}", "-3"],
    ["a {{-3}} b", "a -3 b"],
    ["a {{- -3 }} b", "a-3 b"],
    ["{{ 3 }} {{- 4 }}", "34"],
    ["x\n  {{- /* comment */ -}}\n  y", "xy"],
    ["a {{/* comment */}} b", "a  b"],
    ["{{/* multi\nline */}}ok", "ok"],
    ["a \r\n{{- 1 -}}\r\n b", "a1b"],
  ]);
});

Deno.test("printf, print and println as Go's fmt", async () => {
  await table([
    [
      '{{ printf "%05d|%-4s|%4s|%x|%X|%q|%t|%%" 42 "ab" "ab" "hi" 255 "a\\"b" true }}',
      '00042|ab  |  ab|6869|FF|"a\\"b"|true|%',
    ],
    ['{{ printf "%v %v %v %v" 1.5 42 "s" true }}', "1.5 42 s true"],
    [
      '{{ printf "%6.2f|%e|%g|%+d|%c|%U|%T|%T" 3.14159 1234.5678 1e6 5 65 128512 1 .Commit }}',
      "  3.14|1.234568e+03|1e+06|+5|A|U+1F600|int|metadata.Commit",
    ],
    ['{{ printf "%d" "x" }}', "%!d(string=x)"],
    ['{{ printf "%s %s" "only" }}', "only %!s(MISSING)"],
    ['{{ printf "%s" "a" 1 }}', "a%!(EXTRA int=1)"],
    ['{{ printf "%x %#x %o %b" -255 255 8 5 }}', "-ff 0xff 10 101"],
    ['{{ printf "%.3s|%8.3q" "abcdef" "abcdef" }}', 'abc|   "abc"'],
    ['{{ print 1 2 "a" "b" 3 }}', "1 2ab3"],
    ['{{ println "a" 1 }}', "a 1\n"],
    ["{{ printf `%v` .Build }}", "{42 push }"],
    ["{{ printf `%+v` .Repo }}", "{Name:app Owner:acme Private:false}"],
  ]);
});

Deno.test("builtins: len, index, slice, comparisons, and/or/not, urlquery, html, js", async () => {
  await table([
    ['{{ len "héllo" }} {{ index "abc" 1 }} {{ slice "abcdef" 1 3 }} {{ slice "abc" 1 }}', "6 98 bc bc"],
    ['{{ eq 1 1 }} {{ eq "a" "b" "a" }} {{ ne 1 2 }} {{ eq .Repo.Name "app" }}', "true true true true"],
    ['{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1.5 2.5 }}', "true true true false"],
    ['{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 "" "z" }} {{ not 0 }} [{{ or 0 "" }}]', "0 2 z true []"],
    ["{{ and 0 fail }}{{ or 1 fail }}", "01"],
    ['{{ urlquery "a b&c/d~" }}', "a+b%26c%2Fd~"],
    [`{{ html "<a href='x'>&" }}`, "&lt;a href=&#39;x&#39;&gt;&amp;"],
    [`{{ js "a'b<\\"" }}`, "a\\'b\\u003C\\\""],
  ]);
});

Deno.test("if / else if / else / end and with", async () => {
  await table([
    ['{{ if .Repo.Private }}p{{ else if eq .Build.Event "push" }}push{{ else }}other{{ end }}', "push"],
    ["{{ if .Repo.Private }}p{{ else }}public{{ end }}", "public"],
    ["{{ if .Build.Number }}n{{ end }}", "n"],
    ["{{ with .Commit.Author }}{{ .Name }}{{ end }}", "Dev"],
    ["{{ with .Build.Deploy }}x{{ else }}none{{ end }}", "none"],
    ["{{ with .Build.Deploy }}x{{ else with .Repo.Owner }}{{ . }}{{ end }}", "acme"],
    ["{{ if $x := .Repo.Name }}{{ $x }}{{ end }}", "app"],
  ]);
});

Deno.test("syntax errors: Go's message with line and column (0-based byte offset)", () => {
  const cases: [string, string][] = [
    ["{{ .Repo.Name }", 'template: key:1:14: unexpected "}" in operand'],
    ["{{ .Repo.Name", "template: key:1:13: unclosed action"],
    ["{{ }}", "template: key:1:3: missing value for command"],
    ["{{ nope }}", 'template: key:1:3: function "nope" not defined'],
    ['{{ "abc }}', "template: key:1:3: unterminated quoted string"],
    ["{{ `abc }}", "template: key:1:3: unterminated raw quoted string"],
    ["{{ if .A }}x", "template: key:1:12: unexpected EOF"],
    ["x {{ end }}", "template: key:1:5: unexpected {{end}}"],
    ["{{ else }}", "template: key:1:3: unexpected {{else}}"],
    ["{{ .A | 3 }}", "template: key:1:8: non executable command in pipeline stage 2"],
    ["{{ $x }}", 'template: key:1:3: undefined variable "$x"'],
    ["{{ 3x }}", 'template: key:1:3: bad number syntax: "3x"'],
    ["{{ (1 }}", "template: key:1:6: unclosed left paren"],
    ["{{ 1) }}", 'template: key:1:4: unexpected ")" in command'],
    ["{{/* x */ }}", "template: key:1:2: comment ends before closing delimiter"],
    ["{{ /* x */ }}", 'template: key:1:3: unexpected "/" in command'],
    ['{{ "x".Y }}', 'template: key:1:3: unexpected . after term "\\"x\\""'],
    ["ab\ncd {{ .X }", 'template: key:2:9: unexpected "}" in operand'],
    ["{{ break }}", "template: key:1:3: {{break}} outside {{range}}"],
    ['{{ if 1 }}{{ define "x" }}{{ end }}{{ end }}', "template: key:1:13: unexpected <define> in command"],
    [
      '{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}',
      'template: key:1:29: template: multiple definition of template "x"',
    ],
    ["{{ 1e400 }}", 'template: key:1:3: illegal number syntax: "1e400"'],
  ];
  for (const [template, message] of cases) {
    const err = assertThrows(() => parseTemplate(template, { name: "key", funcs }), TemplateSyntaxError);
    assertEquals(err.message, message, `template ${JSON.stringify(template)}`);
  }
});

Deno.test("define, template and block render as Go's; range over key data fails", async () => {
  await table([
    ['{{ define "n" }}{{ .Name }}!{{ end }}{{ template "n" .Repo }}-{{ template "n" .Repo }}', "app!-app!"],
    ['{{ block "b" .Commit }}{{ .Branch }}{{ end }}/{{ template "b" .Commit }}', "main/main"],
    ['{{ define "v" }}[{{ $ }}]{{ end }}{{ template "v" 7 }}{{ template "v" }}', "[7][<no value>]"],
  ]);
  const err = await assertRejects(() => render('{{ template "nope" }}'), TemplateExecError);
  assertEquals(
    err.message,
    'template: key:1:12: executing "key" at <{{template "nope"}}>: template "nope" not defined',
  );
  await assertRejects(
    () => render("{{ range .Repo.Name }}x{{ end }}"),
    TemplateExecError,
    "range can't iterate over app",
  );
});

Deno.test("syntax errors carry the line, column and a caret excerpt", () => {
  const err = assertThrows(() => parseTemplate("ab\n\tx {{ .A }", { name: "key" }), TemplateSyntaxError);
  assert(err instanceof TemplateSyntaxError);
  assertEquals([err.line, err.column, err.reason], [2, 9, 'unexpected "}" in operand']);
  assertEquals(err.excerpt, "\tx {{ .A }\n\t        ^");
});

Deno.test("string escapes that Go rejects are syntax errors", () => {
  for (
    const bad of [
      '{{ "\\q" }}',
      '{{ "\\xZZ" }}',
      '{{ "\\400" }}',
      '{{ "\\uD800" }}',
      '{{ "\\\'" }}',
      "{{ 'ab' }}",
    ]
  ) {
    assertThrows(() => parseTemplate(bad, { name: "key" }), TemplateSyntaxError, "template: key:1:3:");
  }
});

Deno.test("execution errors: Go's wording, position and context", async () => {
  const cases: [string, string][] = [
    [
      "{{ .Foo }}",
      'template: key:1:3: executing "key" at <.Foo>: can\'t evaluate field Foo in type metadata.Metadata',
    ],
    [
      "x{{ .Repo.Nme }}",
      'template: key:1:9: executing "key" at <.Repo.Nme>: can\'t evaluate field Nme in type metadata.Repo',
    ],
    ["{{ fail }}", 'template: key:1:3: executing "key" at <fail>: error calling fail: boom'],
    ["{{ upper 3 }}", 'template: key:1:9: executing "key" at <3>: expected string; found 3'],
    [
      "{{ .Repo.Name.X }}",
      'template: key:1:8: executing "key" at <.Repo.Name.X>: can\'t evaluate field X in type string',
    ],
    [
      '{{ eq 1 "a" }}',
      'template: key:1:3: executing "key" at <eq 1 "a">: error calling eq: incompatible types',
    ],
    ["{{ 9223372036854775808 }}", "at <9223372036854775808>: 9223372036854775808 overflows int"],
    ["{{ upper }}", "wrong number of args for upper: want 1 got 0"],
    ["{{ .Build.Number | upper }}", "wrong type for value; expected string; got int"],
    ["{{ .Repo.Name 1 }}", "Name has arguments but cannot be invoked as function"],
    ['{{ "a" 1 }}', 'can\'t give argument to non-function "a"'],
    ["{{ nil }}", "nil is not a command"],
    ['{{ index "abc" 5 }}', "error calling index: index out of range: 5"],
    ["{{ len .Repo }}", "error calling len: len of type metadata.Repo"],
    ["{{ printf }}", "wrong number of args for printf: want at least 1 got 0"],
    [
      '{{ printf "%s" (printf "%s" "a very long argument") | upper | twice | fail }}',
      "<fail>: wrong number of args for fail: want 0 got 1",
    ],
  ];
  for (const [template, message] of cases) {
    const t = parseTemplate(template, { name: "key", funcs });
    const err = await assertRejects(() => t.execute(data), TemplateExecError);
    assert(err.message.startsWith("template: key:"), err.message);
    assert(err.message.includes(message), `template ${JSON.stringify(template)}: ${err.message}`);
  }
});

Deno.test("execution error context is cut at 20 characters, as Go", async () => {
  const t = parseTemplate('{{ (printf "%s" "a long argument").Foo }}', { name: "key" });
  const err = await assertRejects(() => t.execute(data), TemplateExecError);
  assertStringStarts(err.message, 'template: key:1:3: executing "key" at <(printf "%s" "a long...>: ');
});

function assertStringStarts(text: string, prefix: string): void {
  assert(text.startsWith(prefix), `expected ${JSON.stringify(text)} to start with ${JSON.stringify(prefix)}`);
}

Deno.test("a parsed template renders again with other data", async () => {
  const t = parseTemplate("{{ .Name }}");
  assertEquals(await t.execute(new GoStruct("T", { Name: "one" })), "one");
  assertEquals(await t.execute(new GoStruct("T", { Name: "two" })), "two");
});

Deno.test("sprintf edge cases: widths from arguments, bad width, no verb, nil", () => {
  assertEquals(sprintf("%*d|%-*d|", [5n, 1n, 3n, 2n]), "    1|2  |");
  assertEquals(sprintf("%*d", ["x", 1n]), "%!(BADWIDTH)1");
  assertEquals(sprintf("100%", []), "100%!(NOVERB)");
  assertEquals(sprintf("%v %d", [null, null]), "<nil> %!d(<nil>)");
  assertEquals(sprintf("%08.3f|%-8.2e|%G", [-3.14159, 1500, 1e-7]), "-003.142|1.50e+03|1E-07");
});
