/**
 * A small Go `text/template` engine, enough for cache keys such as
 * `{{ .Repo.Name }}-{{ checksum "go.sum" }}-{{ arch }}`. Pipelines written for
 * the Go plugin must render the same key here, so the engine mirrors Go's
 * structure and semantics: lex → parse → exec.
 *
 * Supported: literal text; fields (`.Repo.Name`), `.` and `$`; string literals
 * (interpreted `"…"` with Go escapes, raw `` `…` ``), character, number, bool
 * and `nil` literals; function calls with arguments; parenthesised pipelines;
 * pipes (the piped value becomes the last argument); variables (`$x := …`,
 * `$x = …`); `{{if}}`/`{{else if}}`/`{{else}}`/`{{end}}` and `{{with}}`;
 * comments `{{/* … *\/}}`; trim markers `{{- ` and ` -}}`. Built-in
 * functions: `and`, `or`, `not`, `len`, `index`, `slice`, `print`, `printf`,
 * `println`, `urlquery`, `html`, `js`, `call`, `eq`, `ne`, `lt`, `le`, `gt`,
 * `ge`; `{{define}}`, `{{template}}` and `{{block}}` (named templates, as
 * Go: a define only at the top level, a name defined twice with content is
 * an error, `{{template}}` runs with its pipeline as `.` and fresh
 * variables); `{{range}}` (with `break`/`continue`), which can only fail
 * or take its else branch on key data, as in Go 1.19. Not supported (a
 * clear syntax error): custom delimiters, complex numbers and hexadecimal
 * floats.
 *
 * Values are modelled as: `string`, `bigint` (Go `int`), `number` (Go
 * `float64`), `boolean`, `null` (Go `nil`) and {@link GoStruct}. They print
 * as Go's `fmt` prints them.
 *
 * Errors: {@link TemplateSyntaxError} from {@link parseTemplate} (position as
 * `name:line:column`, column a 0-based byte offset as Go reports it), and
 * {@link TemplateExecError} from {@link Template.execute}, worded as Go's
 * (`template: cacheKey:1:3: executing "cacheKey" at <.Foo>: can't evaluate
 * field Foo in type metadata.Metadata`).
 *
 * @module
 */

// ── values ───────────────────────────────────────────────────────────────

/** A Go struct value: a type name (for messages and `%T`) and ordered fields. */
export class GoStruct {
  readonly typeName: string;
  readonly fields: ReadonlyMap<string, Value>;

  constructor(typeName: string, fields: Record<string, Value>) {
    this.typeName = typeName;
    this.fields = new Map(Object.entries(fields));
  }
}

/** A template value: Go `string`, `int` (bigint), `float64` (number), `bool`, `nil` (null) or a struct. */
export type Value = string | bigint | number | boolean | null | GoStruct;

/** Argument kinds a {@link TemplateFunc} declares, checked as Go checks parameter types. */
export type ParamType = "any" | "string" | "int" | "bool";

/**
 * A function callable from templates. Throwing (or rejecting) is Go's
 * `error` result: execution stops with `error calling <name>: <message>`.
 */
export interface TemplateFunc {
  /** Fixed parameters. */
  readonly params: readonly ParamType[];
  /** Type of the extra arguments, when the function is variadic. */
  readonly variadic?: ParamType;
  readonly call: (...args: Value[]) => Value | Promise<Value>;
}

/** Functions by name, as Go's `template.FuncMap`. */
export type FuncMap = Readonly<Record<string, TemplateFunc>>;

// ── errors ───────────────────────────────────────────────────────────────

/** A template that does not parse. `message` is Go's wording plus the column. */
export class TemplateSyntaxError extends Error {
  /** 1-based line. */
  readonly line: number;
  /** 0-based byte offset in the line, as Go's error positions. */
  readonly column: number;
  /** The reason alone, e.g. `unexpected "}" in operand`. */
  readonly reason: string;
  /** The offending line and a caret under the position. */
  readonly excerpt: string;

  constructor(name: string, text: string, pos: number, reason: string) {
    const loc = locate(text, pos);
    super(`template: ${name}:${loc.line}:${loc.column}: ${reason}`);
    this.name = "TemplateSyntaxError";
    this.line = loc.line;
    this.column = loc.column;
    this.reason = reason;
    this.excerpt = loc.excerpt;
  }
}

/** A template that parsed but failed while executing (unknown field, failing function…). */
export class TemplateExecError extends Error {
  /** The reason alone, e.g. `can't evaluate field Foo in type metadata.Repo`. */
  readonly reason: string;

  constructor(
    name: string,
    text: string,
    pos: number,
    context: string,
    reason: string,
    cause?: unknown,
    executing: string = name,
  ) {
    const loc = locate(text, pos);
    const ctx = context.length > 20 ? context.slice(0, 20) + "..." : context;
    super(`template: ${name}:${loc.line}:${loc.column}: executing "${executing}" at <${ctx}>: ${reason}`, {
      cause,
    });
    this.name = "TemplateExecError";
    this.reason = reason;
  }
}

function locate(text: string, pos: number): { line: number; column: number; excerpt: string } {
  const before = text.slice(0, pos);
  const lineStart = before.lastIndexOf("\n") + 1;
  const lineEnd = text.indexOf("\n", pos) < 0 ? text.length : text.indexOf("\n", pos);
  const prefix = text.slice(lineStart, pos);
  const caret = prefix.replace(/[^\t]/gu, " ") + "^";
  return {
    line: 1 + (before.match(/\n/g)?.length ?? 0),
    column: new TextEncoder().encode(prefix).length,
    excerpt: `${text.slice(lineStart, lineEnd)}\n${caret}`,
  };
}

// ── lexer (Go: text/template/parse/lex.go) ───────────────────────────────

type TokenType =
  | "text"
  | "leftDelim"
  | "rightDelim"
  | "space"
  | "pipe"
  | "leftParen"
  | "rightParen"
  | "assign"
  | "declare"
  | "field"
  | "identifier"
  | "variable"
  | "dot"
  | "string"
  | "rawString"
  | "number"
  | "charConstant"
  | "bool"
  | "nil"
  | "keyword"
  | "char"
  | "eof"
  | "error";

interface Token {
  type: TokenType;
  /** Source text of the token (trimmed text for `text`). */
  val: string;
  pos: number;
}

const KEYWORDS = new Set([
  "block",
  "break",
  "continue",
  "define",
  "else",
  "end",
  "if",
  "range",
  "template",
  "with",
]);

type Fail = (pos: number, reason: string) => never;
type StateFn = () => StateFn | null;

const isSpace = (c: string): boolean => c === " " || c === "\t" || c === "\r" || c === "\n";
const isAlphaNumeric = (c: string): boolean => c === "_" || /^[\p{L}\p{Nd}]$/u.test(c);

function hasLeftTrimMarker(s: string, at: number): boolean {
  return s[at] === "-" && isSpace(s[at + 1] ?? "");
}

function hasRightTrimMarker(s: string, at: number): boolean {
  return isSpace(s[at] ?? "") && s[at + 1] === "-";
}

function describeRune(c: string): string {
  const cp = c.codePointAt(0)!;
  return `U+${cp.toString(16).toUpperCase().padStart(4, "0")} ${goQuoteRune(cp)}`;
}

class LexStop extends Error {
  constructor(readonly pos: number, reason: string) {
    super(reason);
  }
}

class Lexer {
  readonly tokens: Token[] = [];
  #pos = 0;
  #start = 0;
  #parenDepth = 0;

  constructor(readonly input: string) {}

  fail(pos: number, reason: string): never {
    throw new LexStop(pos, reason);
  }

  /**
   * Lexes the whole input. A lexical error becomes a final `error` token, so
   * (as in Go, whose parser pulls tokens lazily) a parse error earlier in
   * the input is reported first.
   */
  run(): Token[] {
    let state: StateFn | null = this.#lexText;
    try {
      while (state) state = state();
    } catch (err) {
      if (!(err instanceof LexStop)) throw err;
      this.tokens.push({ type: "error", val: err.message, pos: err.pos });
    }
    return this.tokens;
  }

  #emit(type: TokenType): void {
    this.tokens.push({ type, val: this.input.slice(this.#start, this.#pos), pos: this.#start });
    this.#start = this.#pos;
  }

  #peek(): string {
    const cp = this.input.codePointAt(this.#pos);
    return cp === undefined ? "" : String.fromCodePoint(cp);
  }

  #next(): string {
    const c = this.#peek();
    this.#pos += c.length;
    return c;
  }

  #atRightDelim(): { delim: boolean; trim: boolean } {
    const s = this.input;
    if (hasRightTrimMarker(s, this.#pos) && s.startsWith("}}", this.#pos + 2)) {
      return { delim: true, trim: true };
    }
    return { delim: s.startsWith("}}", this.#pos), trim: false };
  }

  #leftTrimLength(at: number): number {
    let n = 0;
    while (isSpace(this.input[at + n] ?? "")) n++;
    return n;
  }

  #atTerminator(): boolean {
    const c = this.#peek();
    return c === "" || isSpace(c) || ".,|:()".includes(c) || this.input.startsWith("}}", this.#pos);
  }

  #lexText: StateFn = () => {
    const s = this.input;
    const x = s.indexOf("{{", this.#pos);
    if (x < 0) {
      this.#pos = s.length;
      if (this.#pos > this.#start) this.#emit("text");
      this.#emit("eof");
      return null;
    }
    if (x > this.#start) {
      let end = x;
      if (hasLeftTrimMarker(s, x + 2)) { while (end > this.#start && isSpace(s[end - 1])) end--; }
      if (end > this.#start) {
        this.tokens.push({ type: "text", val: s.slice(this.#start, end), pos: this.#start });
      }
    }
    this.#pos = x;
    this.#start = x;
    return this.#lexLeftDelim;
  };

  #lexLeftDelim: StateFn = () => {
    this.#pos += 2;
    const after = hasLeftTrimMarker(this.input, this.#pos) ? 2 : 0;
    if (this.input.startsWith("/*", this.#pos + after)) {
      this.#pos += after;
      this.#start = this.#pos;
      return this.#lexComment;
    }
    this.#emit("leftDelim");
    this.#pos += after;
    this.#start = this.#pos;
    this.#parenDepth = 0;
    return this.#lexInsideAction;
  };

  #lexComment: StateFn = () => {
    this.#pos += 2;
    const x = this.input.indexOf("*/", this.#pos);
    if (x < 0) this.fail(this.#start, "unclosed comment");
    this.#pos = x + 2;
    const { delim, trim } = this.#atRightDelim();
    if (!delim) this.fail(this.#start, "comment ends before closing delimiter");
    this.#pos += (trim ? 2 : 0) + 2;
    if (trim) this.#pos += this.#leftTrimLength(this.#pos);
    this.#start = this.#pos;
    return this.#lexText;
  };

  #lexRightDelim: StateFn = () => {
    const { trim } = this.#atRightDelim();
    if (trim) {
      this.#pos += 2;
      this.#start = this.#pos;
    }
    this.#pos += 2;
    this.#emit("rightDelim");
    if (trim) {
      this.#pos += this.#leftTrimLength(this.#pos);
      this.#start = this.#pos;
    }
    return this.#lexText;
  };

  #lexInsideAction: StateFn = () => {
    const { delim } = this.#atRightDelim();
    if (delim) {
      if (this.#parenDepth === 0) return this.#lexRightDelim;
      this.fail(this.#start, "unclosed left paren");
    }
    const r = this.#next();
    if (r === "") this.fail(this.#start, "unclosed action");
    if (isSpace(r)) {
      this.#pos -= r.length;
      return this.#lexSpace;
    }
    switch (r) {
      case "=":
        this.#emit("assign");
        return this.#lexInsideAction;
      case ":":
        if (this.#next() !== "=") this.fail(this.#start, "expected :=");
        this.#emit("declare");
        return this.#lexInsideAction;
      case "|":
        this.#emit("pipe");
        return this.#lexInsideAction;
      case '"':
        return this.#lexQuote;
      case "`":
        return this.#lexRawQuote;
      case "$":
        return this.#lexFieldOrVariable("variable");
      case "'":
        return this.#lexChar;
      case "(":
        this.#parenDepth++;
        this.#emit("leftParen");
        return this.#lexInsideAction;
      case ")":
        this.#emit("rightParen");
        this.#parenDepth--;
        if (this.#parenDepth < 0) this.fail(this.#start, "unexpected right paren");
        return this.#lexInsideAction;
    }
    if (r === ".") {
      const c = this.input[this.#pos];
      if (c !== undefined && (c < "0" || c > "9")) return this.#lexFieldOrVariable("field");
    }
    if (r === "." || r === "+" || r === "-" || (r >= "0" && r <= "9")) {
      this.#pos -= 1;
      return this.#lexNumber;
    }
    if (isAlphaNumeric(r)) {
      this.#pos -= r.length;
      return this.#lexIdentifier;
    }
    const cp = r.codePointAt(0)!;
    if (cp < 0x7f && cp >= 0x20) {
      this.#emit("char");
      return this.#lexInsideAction;
    }
    return this.fail(this.#start, `unrecognized character in action: ${describeRune(r)}`);
  };

  #lexSpace: StateFn = () => {
    let n = 0;
    while (isSpace(this.#peek())) {
      this.#pos++;
      n++;
    }
    if (hasRightTrimMarker(this.input, this.#pos - 1) && this.input.startsWith("}}", this.#pos + 1)) {
      this.#pos--;
      if (n === 1) return this.#lexRightDelim;
    }
    this.#emit("space");
    return this.#lexInsideAction;
  };

  #lexIdentifier: StateFn = () => {
    while (isAlphaNumeric(this.#peek())) this.#next();
    if (!this.#atTerminator()) this.fail(this.#start, `bad character ${describeRune(this.#peek())}`);
    const word = this.input.slice(this.#start, this.#pos);
    if (KEYWORDS.has(word)) this.#emit("keyword");
    else if (word === "nil") this.#emit("nil");
    else if (word === "true" || word === "false") this.#emit("bool");
    else this.#emit("identifier");
    return this.#lexInsideAction;
  };

  #lexFieldOrVariable(type: "field" | "variable"): StateFn {
    return () => {
      if (this.#atTerminator()) {
        this.#emit(type === "variable" ? "variable" : "dot");
        return this.#lexInsideAction;
      }
      while (isAlphaNumeric(this.#peek())) this.#next();
      if (!this.#atTerminator()) this.fail(this.#start, `bad character ${describeRune(this.#peek())}`);
      this.#emit(type);
      return this.#lexInsideAction;
    };
  }

  #accept(valid: string): boolean {
    const c = this.#peek();
    if (c !== "" && valid.includes(c)) {
      this.#pos += c.length;
      return true;
    }
    return false;
  }

  #acceptRun(valid: string): void {
    while (this.#accept(valid));
  }

  #lexNumber: StateFn = () => {
    this.#accept("+-");
    let digits = "0123456789_";
    if (this.#accept("0")) {
      if (this.#accept("xX")) digits = "0123456789abcdefABCDEF_";
      else if (this.#accept("oO")) digits = "01234567_";
      else if (this.#accept("bB")) digits = "01_";
    }
    this.#acceptRun(digits);
    if (this.#accept(".")) this.#acceptRun(digits);
    if (digits.length === 11 && this.#accept("eE")) {
      this.#accept("+-");
      this.#acceptRun("0123456789_");
    }
    if (digits.length === 23 && this.#accept("pP")) {
      this.#accept("+-");
      this.#acceptRun("0123456789_");
    }
    this.#accept("i");
    if (isAlphaNumeric(this.#peek())) {
      this.#next();
      this.fail(this.#start, `bad number syntax: ${goQuote(this.input.slice(this.#start, this.#pos))}`);
    }
    this.#emit("number");
    return this.#lexInsideAction;
  };

  #lexQuoted(close: string, type: TokenType, what: string): StateFn {
    return () => {
      for (;;) {
        let c = this.#next();
        if (c === "\\" && close !== "`") {
          c = this.#next();
          if (c !== "" && c !== "\n") continue;
          this.fail(this.#start, `unterminated ${what}`);
        }
        if (c === "" || (c === "\n" && close !== "`")) this.fail(this.#start, `unterminated ${what}`);
        if (c === close) break;
      }
      this.#emit(type);
      return this.#lexInsideAction;
    };
  }

  #lexQuote = this.#lexQuoted('"', "string", "quoted string");
  #lexRawQuote = this.#lexQuoted("`", "rawString", "raw quoted string");
  #lexChar = this.#lexQuoted("'", "charConstant", "character constant");
}

// ── parser (Go: text/template/parse/parse.go) ────────────────────────────

interface Span {
  /** Where errors point (Go: a field chain points at its second field). */
  pos: number;
  end: number;
  /** Start of the node's source text, when it differs from `pos`. */
  from?: number;
}

interface TextNode {
  kind: "text";
  text: string;
}
interface ActionNode {
  kind: "action";
  pipe: PipeNode;
}
interface BranchNode {
  kind: "if" | "with" | "range";
  pipe: PipeNode;
  list: TreeNode[];
  elseList: TreeNode[] | null;
}
interface TemplateNode {
  kind: "template";
  pos: number;
  name: string;
  pipe: PipeNode | null;
}
type TreeNode = TextNode | ActionNode | BranchNode | TemplateNode;

interface PipeNode extends Span {
  kind: "pipe";
  isAssign: boolean;
  decl: string[];
  cmds: CommandNode[];
}
interface CommandNode {
  pos: number;
  args: ArgNode[];
}
type ArgNode =
  | (Span & { kind: "field"; idents: string[] })
  | (Span & { kind: "variable"; name: string; idents: string[] })
  | (Span & { kind: "dot" | "nil" })
  | (Span & { kind: "bool"; value: boolean })
  | (Span & { kind: "number"; value: bigint | number })
  | (Span & { kind: "string"; value: string })
  | (Span & { kind: "identifier"; name: string })
  | (Span & { kind: "chain"; node: ArgNode; idents: string[] })
  | PipeNode;

type ControlEnd = { kind: "end" | "else"; pos: number };

const UNSUPPORTED_KEYWORDS = new Set<string>();

/** Named templates (`define`, `block`), by name. */
export type Defines = Map<string, TreeNode[]>;

class Parser {
  #i = 0;
  #vars = ["$"];
  /** Nesting of control structures (a define is only allowed at depth 0). */
  #depth = 0;
  /** Nesting of `{{range}}` (`break`/`continue` are only allowed inside one). */
  #ranges = 0;
  /** Named templates defined so far. */
  readonly defines: Defines = new Map();

  constructor(
    readonly tokens: Token[],
    readonly funcs: FuncMap,
    readonly fail: Fail,
  ) {}

  parse(): TreeNode[] {
    const root: TreeNode[] = [];
    while (this.#peek().type !== "eof") {
      const n = this.#textOrAction();
      if (n.kind === "end" || n.kind === "else") this.fail(n.pos, `unexpected {{${n.kind}}}`);
      root.push(n as TreeNode);
    }
    return root;
  }

  #next(): Token {
    const t = this.#peek();
    this.#i++;
    return t;
  }
  #backup(): void {
    this.#i--;
  }
  #peek(): Token {
    const t = this.tokens[Math.min(this.#i, this.tokens.length - 1)];
    return t.type === "error" ? this.fail(t.pos, t.val) : t;
  }
  #nextNonSpace(): Token {
    let t: Token;
    do t = this.#next(); while (t.type === "space");
    return t;
  }
  #peekNonSpace(): Token {
    const t = this.#nextNonSpace();
    this.#backup();
    return t;
  }
  #expect(type: TokenType, context: string): Token {
    const t = this.#nextNonSpace();
    if (t.type !== type) this.#unexpected(t, context);
    return t;
  }
  #unexpected(t: Token, context: string): never {
    return this.fail(t.pos, `unexpected ${tokenString(t)} in ${context}`);
  }

  #textOrAction(): TreeNode | ControlEnd {
    const t = this.#nextNonSpace();
    if (t.type === "text") return { kind: "text", text: t.val };
    if (t.type === "leftDelim") return this.#action();
    return this.#unexpected(t, "input");
  }

  #action(): TreeNode | ControlEnd {
    const t = this.#nextNonSpace();
    if (t.type === "keyword") {
      if (t.val === "else") return this.#elseControl(t.pos);
      if (t.val === "end") {
        this.#expect("rightDelim", "end");
        return { kind: "end", pos: t.pos };
      }
      if (t.val === "if" || t.val === "with" || t.val === "range") return this.#control(t.val);
      if (t.val === "break" || t.val === "continue") {
        // Valid only inside {{range}}; a range never runs its body here (no key value can be iterated).
        if (this.#ranges === 0) this.fail(t.pos, `{{${t.val}}} outside {{range}}`);
        this.#expect("rightDelim", t.val);
        return { kind: "text", text: "" };
      }
      if (t.val === "define") return this.#define(t);
      if (t.val === "template") return this.#template();
      if (t.val === "block") return this.#block();
      if (UNSUPPORTED_KEYWORDS.has(t.val)) {
        this.fail(t.pos, `{{${t.val}}} is not supported in ci-cache key templates`);
      }
    }
    this.#backup();
    return { kind: "action", pipe: this.#pipeline("command", "rightDelim") };
  }

  #elseControl(pos: number): ControlEnd {
    const p = this.#peekNonSpace();
    if (!(p.type === "keyword" && (p.val === "if" || p.val === "with"))) this.#expect("rightDelim", "else");
    return { kind: "else", pos };
  }

  /** A template name: a string constant (Go: `parseTemplateName`). */
  #templateName(context: string): string {
    const t = this.#nextNonSpace();
    if (t.type !== "string" && t.type !== "rawString") this.#unexpected(t, context);
    return unquote(t, this.fail);
  }

  /** Registers a named template; a second non-empty definition of a name is an error, as in Go. */
  #addDefine(name: string, list: TreeNode[], pos: number): void {
    const old = this.defines.get(name);
    if (old && !isEmptyTree(old)) {
      if (!isEmptyTree(list)) this.fail(pos, `template: multiple definition of template ${goQuote(name)}`);
      return;
    }
    this.defines.set(name, list);
  }

  /** The body of a define or block, up to its `{{end}}`, with fresh variables. */
  #namedBody(context: string): TreeNode[] {
    const vars = this.#vars;
    this.#vars = ["$"];
    this.#depth++;
    try {
      const [list, end] = this.#itemList();
      if (end.kind !== "end") this.fail(end.pos, `unexpected {{else}} in ${context}`);
      return list;
    } finally {
      this.#depth--;
      this.#vars = vars;
    }
  }

  #define(t: Token): TextNode {
    if (this.#depth > 0) this.fail(t.pos, "unexpected <define> in command");
    const name = this.#templateName("define clause");
    this.#expect("rightDelim", "define clause");
    this.#addDefine(name, this.#namedBody("define clause"), t.pos);
    return { kind: "text", text: "" };
  }

  #template(): TemplateNode {
    const pos = this.#peekNonSpace().pos;
    const name = this.#templateName("template clause");
    let pipe: PipeNode | null = null;
    if (this.#peekNonSpace().type !== "rightDelim") pipe = this.#pipeline("template clause", "rightDelim");
    else this.#nextNonSpace();
    return { kind: "template", pos, name, pipe };
  }

  #block(): TemplateNode {
    const pos = this.#peekNonSpace().pos;
    const name = this.#templateName("block clause");
    const pipe = this.#pipeline("block clause", "rightDelim");
    this.#addDefine(name, this.#namedBody("block clause"), pos);
    return { kind: "template", pos, name, pipe };
  }

  #control(kind: "if" | "with" | "range"): BranchNode {
    const mark = this.#vars.length;
    this.#depth++;
    if (kind === "range") this.#ranges++;
    try {
      const pipe = this.#pipeline(kind, "rightDelim");
      const [list, next] = this.#itemList();
      let elseList: TreeNode[] | null = null;
      if (next.kind === "else") {
        const p = this.#peek();
        if (p.type === "keyword" && p.val === kind) {
          this.#next();
          elseList = [this.#control(kind)];
        } else {
          const [more, end] = this.#itemList();
          if (end.kind !== "end") this.fail(end.pos, "expected end; found {{else}}");
          elseList = more;
        }
      }
      return { kind, pipe, list, elseList };
    } finally {
      if (kind === "range") this.#ranges--;
      this.#depth--;
      this.#vars.length = mark;
    }
  }

  #itemList(): [TreeNode[], ControlEnd] {
    const list: TreeNode[] = [];
    while (this.#peekNonSpace().type !== "eof") {
      const n = this.#textOrAction();
      if (n.kind === "end" || n.kind === "else") return [list, n];
      list.push(n as TreeNode);
    }
    return this.fail(this.#peek().pos, "unexpected EOF");
  }

  #pipeline(context: string, end: "rightDelim" | "rightParen"): PipeNode {
    const first = this.#peekNonSpace();
    const pipe: PipeNode = {
      kind: "pipe",
      pos: first.pos,
      end: first.pos,
      isAssign: false,
      decl: [],
      cmds: [],
    };
    if (first.type === "variable") {
      const at = this.#i;
      this.#next();
      const next = this.#peekNonSpace();
      if (next.type === "assign" || next.type === "declare") {
        this.#nextNonSpace();
        pipe.isAssign = next.type === "assign";
        pipe.decl.push(first.val);
        this.#vars.push(first.val);
      } else if (next.type === "char" && next.val === "," && context === "range") {
        // {{range $i, $e := pipeline}}
        this.#nextNonSpace();
        const second = this.#nextNonSpace();
        if (second.type !== "variable") this.fail(second.pos, `range can only initialize variables`);
        const op = this.#nextNonSpace();
        if (op.type !== "declare" && op.type !== "assign") this.#unexpected(op, "range");
        pipe.isAssign = op.type === "assign";
        pipe.decl.push(first.val, second.val);
        this.#vars.push(first.val, second.val);
      } else if (next.type === "char" && next.val === ",") {
        this.#unexpected(next, context);
      } else {
        this.#i = at;
      }
    }
    for (;;) {
      const t = this.#nextNonSpace();
      if (t.type === end) {
        this.#checkPipeline(pipe, context);
        pipe.end = t.pos + t.val.length;
        return pipe;
      }
      switch (t.type) {
        case "bool":
        case "charConstant":
        case "dot":
        case "field":
        case "identifier":
        case "number":
        case "nil":
        case "rawString":
        case "string":
        case "variable":
        case "leftParen":
          this.#backup();
          pipe.cmds.push(this.#command());
          break;
        default:
          this.#unexpected(t, context);
      }
    }
  }

  #checkPipeline(pipe: PipeNode, context: string): void {
    if (pipe.cmds.length === 0) this.fail(pipe.pos, `missing value for ${context}`);
    pipe.cmds.slice(1).forEach((c, i) => {
      if (["bool", "dot", "nil", "number", "string"].includes(c.args[0].kind)) {
        this.fail(c.pos, `non executable command in pipeline stage ${i + 2}`);
      }
    });
  }

  #command(): CommandNode {
    const cmd: CommandNode = { pos: this.#peekNonSpace().pos, args: [] };
    for (;;) {
      this.#peekNonSpace();
      const op = this.#operand();
      if (op) cmd.args.push(op);
      const t = this.#next();
      if (t.type === "space") continue;
      if (t.type === "rightDelim" || t.type === "rightParen") this.#backup();
      else if (t.type !== "pipe") this.#unexpected(t, "operand");
      break;
    }
    if (cmd.args.length === 0) this.fail(cmd.pos, "empty command");
    return cmd;
  }

  #operand(): ArgNode | null {
    const node = this.#term();
    if (!node || this.#peek().type !== "field") return node;
    const idents: string[] = [];
    let end = node.end;
    const fieldPos = this.#peek().pos;
    while (this.#peek().type === "field") {
      const f = this.#next();
      idents.push(f.val.slice(1));
      end = f.pos + f.val.length;
    }
    switch (node.kind) {
      case "field":
      case "variable":
        return { ...node, idents: [...node.idents, ...idents], end, from: node.pos, pos: fieldPos };
      case "bool":
      case "string":
      case "number":
      case "nil":
      case "dot":
        return this.fail(node.pos, `unexpected . after term ${goQuote(this.#src(node))}`);
      default:
        return { kind: "chain", pos: node.pos, end, node, idents };
    }
  }

  #src(n: Span): string {
    return this.tokens.length ? sourceOf(this.tokens, n) : "";
  }

  #term(): ArgNode | null {
    const t = this.#nextNonSpace();
    const span = { pos: t.pos, end: t.pos + t.val.length };
    switch (t.type) {
      case "identifier":
        if (!Object.hasOwn(this.funcs, t.val)) this.fail(t.pos, `function ${goQuote(t.val)} not defined`);
        return { kind: "identifier", name: t.val, ...span };
      case "dot":
        return { kind: "dot", ...span };
      case "nil":
        return { kind: "nil", ...span };
      case "variable":
        if (!this.#vars.includes(t.val)) this.fail(t.pos, `undefined variable ${goQuote(t.val)}`);
        return { kind: "variable", name: t.val, idents: [], ...span };
      case "field":
        return { kind: "field", idents: [t.val.slice(1)], ...span };
      case "bool":
        return { kind: "bool", value: t.val === "true", ...span };
      case "charConstant":
        return { kind: "number", value: BigInt(unquoteChar(t, this.fail)), ...span };
      case "number":
        return { kind: "number", value: parseNumber(t, this.fail), ...span };
      case "leftParen": {
        const p = this.#pipeline("parenthesized pipeline", "rightParen");
        p.pos = t.pos;
        return p;
      }
      case "string":
        return { kind: "string", value: unquote(t, this.fail), ...span };
      case "rawString":
        return { kind: "string", value: t.val.slice(1, -1).replaceAll("\r", ""), ...span };
    }
    this.#backup();
    return null;
  }
}

/** The source text of a node: recovered from the token stream's input positions. */
function sourceOf(tokens: Token[], n: Span): string {
  const from = n.from ?? n.pos;
  return tokens.filter((t) => t.pos >= from && t.pos < n.end && t.type !== "error").map((t) => t.val).join(
    "",
  );
}

function tokenString(t: Token): string {
  if (t.type === "eof") return "EOF";
  if (t.type === "keyword" || t.type === "nil" || t.type === "dot") return `<${t.val}>`;
  const runes = [...t.val];
  return runes.length > 10 ? goQuote(runes.slice(0, 10).join("")) + "..." : goQuote(t.val);
}

function parseNumber(t: Token, fail: Fail): bigint | number {
  const text = t.val;
  if (text.endsWith("i")) {
    return fail(t.pos, `complex number ${text} is not supported in ci-cache key templates`);
  }
  const sign = text[0] === "-" ? -1n : 1n;
  const body = text.replace(/^[+-]/, "");
  const intRe = /^(0[xX](_?[0-9a-fA-F])+|0[bB](_?[01])+|0[oO](_?[0-7])+|0(_?[0-7])*|[1-9](_?[0-9])*)$/;
  if (intRe.test(body)) {
    const clean = body.replaceAll("_", "");
    // Out of int64 range: Go reports "overflows int" when executing, so does Template.execute.
    return sign * BigInt(/^0[0-7]/.test(clean) ? "0o" + clean.slice(1) : clean);
  }
  const floatRe = /^([0-9]+(_[0-9]+)*)?\.?([0-9]+(_[0-9]+)*)?([eE][+-]?[0-9]+(_[0-9]+)*)?$/;
  if (/[0-9]/.test(body) && /[.eE]/.test(body) && floatRe.test(body)) {
    const n = Number(text.replaceAll("_", ""));
    if (Number.isFinite(n)) return n;
  }
  return fail(t.pos, `illegal number syntax: ${goQuote(text)}`);
}

/** Go's strconv.Unquote for interpreted strings (`quote` `"`) and character constants (`'`). */
function unescape(t: Token, fail: Fail): Uint8Array {
  const quote = t.val[0];
  const body = t.val.slice(1, -1);
  const out: number[] = [];
  const enc = new TextEncoder();
  const bad = (what: string): never =>
    fail(t.pos, `invalid syntax in ${quote === '"' ? "string" : "character"} literal ${t.val}: ${what}`);
  for (let i = 0; i < body.length;) {
    const c = String.fromCodePoint(body.codePointAt(i)!);
    i += c.length;
    if (c === quote) bad(`unescaped ${quote}`);
    if (c !== "\\") {
      out.push(...enc.encode(c));
      continue;
    }
    const e = body[i++];
    const simple: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, "\\": 92 };
    if (e in simple) out.push(simple[e]);
    else if (e === quote) out.push(quote.charCodeAt(0));
    else if (e === "x" || e === "u" || e === "U") {
      const n = e === "x" ? 2 : e === "u" ? 4 : 8;
      const hex = body.slice(i, i + n);
      if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) bad(`\\${e} needs ${n} hex digits`);
      i += n;
      const v = parseInt(hex, 16);
      if (e === "x") out.push(v);
      else if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) bad(`\\${e}${hex} is not a valid code point`);
      else out.push(...enc.encode(String.fromCodePoint(v)));
    } else if (e !== undefined && e >= "0" && e <= "7") {
      const oct = body.slice(i - 1, i + 2);
      if (!/^[0-7]{3}$/.test(oct) || parseInt(oct, 8) > 255) {
        bad(`octal escape \\${oct} needs 3 digits up to \\377`);
      }
      i += 2;
      out.push(parseInt(oct, 8));
    } else bad(`unknown escape \\${e ?? ""}`);
  }
  return new Uint8Array(out);
}

function unquote(t: Token, fail: Fail): string {
  return new TextDecoder().decode(unescape(t, fail));
}

function unquoteChar(t: Token, fail: Fail): number {
  const s = [...new TextDecoder().decode(unescape(t, fail))];
  if (s.length !== 1) fail(t.pos, `malformed character constant: ${t.val}`);
  return s[0].codePointAt(0)!;
}

/** Go's `parse.IsEmptyTree`: only whitespace text and (recursively) empty lists. */
function isEmptyTree(list: TreeNode[]): boolean {
  return list.every((n) => n.kind === "text" && n.text.trim() === "");
}

// ── templates and execution (Go: text/template/exec.go) ──────────────────

const MISSING = Symbol("missing");
type Maybe = Value | typeof MISSING;

/**
 * A parsed template. Parse with {@link parseTemplate}; execute any number of
 * times against different data.
 */
export class Template {
  readonly name: string;
  readonly text: string;
  readonly #root: TreeNode[];
  readonly #funcs: FuncMap;
  readonly #tokens: Token[];
  readonly #defines: Defines;

  /** @internal Use {@link parseTemplate}. */
  constructor(
    name: string,
    text: string,
    root: TreeNode[],
    funcs: FuncMap,
    tokens: Token[],
    defines: Defines = new Map(),
  ) {
    this.name = name;
    this.text = text;
    this.#root = root;
    this.#funcs = funcs;
    this.#tokens = tokens;
    this.#defines = defines;
  }

  /**
   * Renders the template with `data` as `.` (and `$`). Rejects with
   * {@link TemplateExecError} on unknown fields, failing functions, wrong
   * argument types, …, as Go's `Execute` returns an error.
   *
   * @example
   * ```ts
   * const t = parseTemplate("{{ .Name | printf \"%s-x\" }}");
   * await t.execute(new GoStruct("main.T", { Name: "a" })); // "a-x"
   * ```
   */
  async execute(data: Value): Promise<string> {
    const state = new ExecState(this.name, this.text, this.#funcs, this.#tokens, data, this.#defines);
    await state.walk(data, this.#root);
    return state.out.join("");
  }
}

/** Options for {@link parseTemplate}. */
export interface ParseOptions {
  /** Template name for messages (Go plugin: `cacheKey`). Default `template`. */
  name?: string;
  /** Functions besides the built-ins; they win over built-ins of the same name, as in Go. */
  funcs?: FuncMap;
}

/**
 * Parses a Go text/template. Throws {@link TemplateSyntaxError} (with the
 * position and a caret excerpt) for anything Go would reject at parse time,
 * including calls of undefined functions.
 *
 * @example
 * ```ts
 * const t = parseTemplate("{{ .Commit.Branch | lower }}", { name: "cacheKey", funcs });
 * ```
 */
export function parseTemplate(text: string, options: ParseOptions = {}): Template {
  const name = options.name ?? "template";
  const funcs: FuncMap = { ...BUILTINS, ...options.funcs };
  const fail: Fail = (pos, reason) => {
    throw new TemplateSyntaxError(name, text, pos, reason);
  };
  const tokens = new Lexer(text).run();
  const parser = new Parser(tokens, funcs, fail);
  const root = parser.parse();
  return new Template(name, text, root, funcs, tokens, parser.defines);
}

class ExecState {
  readonly out: string[] = [];
  #vars: { name: string; value: Value }[];

  constructor(
    readonly name: string,
    readonly text: string,
    readonly funcs: FuncMap,
    readonly tokens: Token[],
    root: Value,
    readonly defines: Defines = new Map(),
  ) {
    this.#vars = [{ name: "$", value: root }];
    this.#running = name;
  }

  /** Nesting of `{{template}}` calls (Go stops at 100000; a key template has no use for deep ones). */
  #depth = 0;
  /** The template being executed, for messages (`executing "name"`): the main one or a named one. */
  #running: string;

  /** Runs a named template with `dot` as `.` and `$`, and fresh variables (Go: `walkTemplate`). */
  async #walkTemplate(dot: Value, n: TemplateNode): Promise<void> {
    const list = this.defines.get(n.name);
    const span = { pos: n.pos, end: n.pos };
    if (!list) {
      // Go names the node as it prints it: {{template "name" pipeline}}.
      const pipe = n.pipe ? ` ${sourceOf(this.tokens, n.pipe)}` : "";
      throw new TemplateExecError(
        this.name,
        this.text,
        n.pos,
        `{{template ${goQuote(n.name)}${pipe}}}`,
        `template ${goQuote(n.name)} not defined`,
      );
    }
    const value = n.pipe ? await this.#evalPipeline(dot, n.pipe) : null;
    if (++this.#depth > 10000) this.#fail(span, "exceeded maximum template depth (10000)");
    const vars = this.#vars;
    const running = this.#running;
    this.#vars = [{ name: "$", value }];
    this.#running = n.name;
    try {
      await this.walk(value, list);
    } finally {
      this.#vars = vars;
      this.#running = running;
      this.#depth--;
    }
  }

  #fail(node: Span, reason: string, cause?: unknown): never {
    throw new TemplateExecError(
      this.name,
      this.text,
      node.pos,
      sourceOf(this.tokens, node),
      reason,
      cause,
      this.#running,
    );
  }

  async walk(dot: Value, list: TreeNode[]): Promise<void> {
    for (const n of list) {
      if (n.kind === "text") this.out.push(n.text);
      else if (n.kind === "template") await this.#walkTemplate(dot, n);
      else if (n.kind === "action") {
        const v = await this.#evalPipeline(dot, n.pipe);
        if (n.pipe.decl.length === 0) this.out.push(v === null ? "<no value>" : formatValue(v));
      } else {
        const mark = this.#vars.length;
        const v = await this.#evalPipeline(dot, n.pipe);
        if (n.kind === "range") {
          // Key data holds no slices, maps or channels: nil runs the else branch, anything else fails as in
          // Go 1.19 (an int is iterable from Go 1.22 on; the Go plugin's builds are older).
          // Go reports it at the pipeline's last command.
          const at = n.pipe.cmds.at(-1)?.args[0] ?? n.pipe;
          if (v !== null) this.#fail(at, `range can't iterate over ${formatValue(v)}`);
          if (n.elseList) await this.walk(dot, n.elseList);
        } else if (isTrue(v)) await this.walk(n.kind === "with" ? v : dot, n.list);
        else if (n.elseList) await this.walk(dot, n.elseList);
        this.#vars.length = mark;
      }
    }
  }

  async #evalPipeline(dot: Value, pipe: PipeNode): Promise<Value> {
    let value: Maybe = MISSING;
    for (const cmd of pipe.cmds) value = await this.#evalCommand(dot, cmd, value);
    const v = value === MISSING ? null : value;
    for (const name of pipe.decl) {
      if (!pipe.isAssign) this.#vars.push({ name, value: v });
      else {
        const slot = this.#vars.findLast((x) => x.name === name);
        if (!slot) this.#fail(pipe, `undefined variable: ${name}`);
        slot.value = v;
      }
    }
    return v;
  }

  #variable(node: Span & { name: string }): Value {
    const slot = this.#vars.findLast((x) => x.name === node.name);
    return slot ? slot.value : this.#fail(node, `undefined variable: ${node.name}`);
  }

  #notAFunction(args: ArgNode[], final: Maybe): void {
    if (args.length > 1 || final !== MISSING) {
      this.#fail(args[0], `can't give argument to non-function ${sourceOf(this.tokens, args[0])}`);
    }
  }

  async #evalCommand(dot: Value, cmd: CommandNode, final: Maybe): Promise<Value> {
    const first = cmd.args[0];
    switch (first.kind) {
      case "field":
        return this.#evalFieldChain(dot, first, first.idents, cmd.args, final);
      case "chain": {
        if (first.node.kind === "nil") {
          this.#fail(first, `indirection through explicit nil in ${this.#src(first)}`);
        }
        const recv = await this.#evalArg(dot, first.node);
        return this.#evalFieldChain(recv, first, first.idents, cmd.args, final);
      }
      case "identifier":
        return await this.#evalFunction(dot, first, cmd.args.slice(1), final, commandSpan(cmd, first));
      case "pipe":
        this.#notAFunction(cmd.args, final);
        return await this.#evalPipeline(dot, first);
      case "variable": {
        const v = this.#variable(first);
        if (first.idents.length === 0) {
          this.#notAFunction(cmd.args, final);
          return v;
        }
        return this.#evalFieldChain(v, first, first.idents, cmd.args, final);
      }
    }
    this.#notAFunction(cmd.args, final);
    switch (first.kind) {
      case "dot":
        return dot;
      case "nil":
        return this.#fail(first, "nil is not a command");
      default:
        return this.#literal(first);
    }
  }

  #literal(node: Span & { value: Value }): Value {
    const v = node.value;
    if (typeof v === "bigint" && (v < -(2n ** 63n) || v >= 2n ** 63n)) {
      this.#fail(node, `${this.#src(node)} overflows int`);
    }
    return v;
  }

  #src(n: Span): string {
    return sourceOf(this.tokens, n);
  }

  #evalFieldChain(receiver: Value, node: Span, idents: string[], args: ArgNode[], final: Maybe): Value {
    let v = receiver;
    for (const [k, name] of idents.entries()) {
      const last = k === idents.length - 1;
      if (v === null) this.#fail(node, `nil pointer evaluating interface {}.${name}`);
      if (!(v instanceof GoStruct) || !v.fields.has(name)) {
        return this.#fail(node, `can't evaluate field ${name} in type ${goTypeName(v)}`);
      }
      if (last && (args.length > 1 || final !== MISSING)) {
        this.#fail(node, `${name} has arguments but cannot be invoked as function`);
      }
      v = v.fields.get(name)!;
    }
    return v;
  }

  async #evalArg(dot: Value, node: ArgNode): Promise<Value> {
    switch (node.kind) {
      case "dot":
        return dot;
      case "nil":
        return null;
      case "field":
        return this.#evalFieldChain(dot, node, node.idents, [node], MISSING);
      case "variable": {
        const v = this.#variable(node);
        return node.idents.length ? this.#evalFieldChain(v, node, node.idents, [node], MISSING) : v;
      }
      case "pipe":
        return await this.#evalPipeline(dot, node);
      case "identifier":
        return await this.#evalFunction(dot, node, [], MISSING);
      case "chain":
        if (node.node.kind === "nil") {
          this.#fail(node, `indirection through explicit nil in ${this.#src(node)}`);
        }
        return this.#evalFieldChain(await this.#evalArg(dot, node.node), node, node.idents, [node], MISSING);
      default:
        return this.#literal(node);
    }
  }

  async #evalFunction(
    dot: Value,
    ident: Span & { name: string },
    args: ArgNode[],
    final: Maybe,
    call: Span = ident,
  ): Promise<Value> {
    const name = ident.name;
    const fn = this.funcs[name];
    const numIn = args.length + (final === MISSING ? 0 : 1);
    if (fn.variadic !== undefined) {
      if (numIn < fn.params.length) {
        this.#fail(ident, `wrong number of args for ${name}: want at least ${fn.params.length} got ${numIn}`);
      }
    } else if (numIn !== fn.params.length) {
      this.#fail(ident, `wrong number of args for ${name}: want ${fn.params.length} got ${numIn}`);
    }
    if (BUILTINS[name] === fn && (name === "and" || name === "or")) {
      // Go 1.18+: and/or short-circuit and return the deciding operand.
      let v: Value = null;
      for (const arg of args) {
        v = await this.#evalArg(dot, arg);
        if (isTrue(v) === (name === "or")) return v;
      }
      return final === MISSING ? v : final;
    }
    const values: Value[] = [];
    for (const [k, arg] of args.entries()) {
      const type = paramType(fn, k);
      if (type !== "any" && ["bool", "number", "string", "nil"].includes(arg.kind)) {
        // Go checks literal arguments against the parameter type before evaluating them.
        const v = arg.kind === "nil" ? null : this.#literal(arg as Span & { value: Value });
        const ok = (type === "string" && typeof v === "string") ||
          (type === "bool" && typeof v === "boolean") ||
          (type === "int" && (typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v))));
        if (v === null) this.#fail(arg, `cannot assign nil to ${type}`);
        if (!ok) this.#fail(arg, `expected ${type === "int" ? "integer" : type}; found ${this.#src(arg)}`);
      }
      values.push(this.#convert(await this.#evalArg(dot, arg), type, arg));
    }
    if (final !== MISSING) values.push(this.#convert(final, paramType(fn, args.length), ident));
    try {
      return await fn.call(...values);
    } catch (err) {
      if (err instanceof TemplateExecError) throw err;
      return this.#fail(
        call,
        `error calling ${name}: ${err instanceof Error ? err.message : String(err)}`,
        err,
      );
    }
  }

  #convert(v: Value, type: ParamType, node: Span): Value {
    const ok = type === "any" || (type === "string" && typeof v === "string") ||
      (type === "bool" && typeof v === "boolean") || (type === "int" && typeof v === "bigint");
    if (ok) return v;
    if (type === "int" && typeof v === "number" && Number.isInteger(v)) return BigInt(v);
    if (v === null) return this.#fail(node, `invalid value; expected ${type}`);
    return this.#fail(node, `wrong type for value; expected ${type}; got ${goTypeName(v)}`);
  }
}

/** The span of a whole command (`eq 1 "a"`), Go's context for "error calling". */
function commandSpan(cmd: CommandNode, first: Span): Span {
  const last = cmd.args[cmd.args.length - 1];
  return { pos: first.pos, end: last.end };
}

function paramType(fn: TemplateFunc, k: number): ParamType {
  return k < fn.params.length ? fn.params[k] : fn.variadic ?? "any";
}

/** Go's truth: false, 0, "" and nil are false; structs are true. */
export function isTrue(v: Value): boolean {
  if (v === null) return false;
  if (typeof v === "boolean") return v;
  if (typeof v === "bigint") return v !== 0n;
  if (typeof v === "number") return v !== 0;
  if (typeof v === "string") return v.length > 0;
  return true;
}

// ── fmt: Go's value printing (Sprint, Sprintln, Sprintf) ─────────────────

/** Go's type name of a value, as `%T` prints it. */
export function goTypeName(v: Value): string {
  if (v === null) return "<nil>";
  if (v instanceof GoStruct) return v.typeName;
  return { string: "string", bigint: "int", number: "float64", boolean: "bool" }[typeof v as "string"];
}

interface Flags {
  minus?: boolean;
  plus?: boolean;
  sharp?: boolean;
  space?: boolean;
  zero?: boolean;
  width?: number;
  prec?: number;
}

/**
 * Formats one value as Go's `fmt` does for `verb` (`v` by default): strings
 * as is, ints in decimal, floats like `%g` (`1e+06`, `3.5`), bools as
 * `true`/`false`, nil as `<nil>`, structs as `{field field}`.
 *
 * @example
 * ```ts
 * formatValue(42n); // "42"
 * formatValue(1e6); // "1e+06"
 * ```
 */
export function formatValue(v: Value, verb = "v"): string {
  return fmtArg(v, verb, {});
}

/**
 * Go's `fmt.Sprint`: operands formatted with `%v`, a space between two
 * operands when neither is a string.
 *
 * @example
 * ```ts
 * sprint([1n, 2n, "a", 3n]); // "1 2a3"
 * ```
 */
export function sprint(args: readonly Value[]): string {
  let out = "";
  let prevString = false;
  args.forEach((a, i) => {
    const isString = typeof a === "string";
    if (i > 0 && !isString && !prevString) out += " ";
    out += fmtArg(a, "v", {});
    prevString = isString;
  });
  return out;
}

/** Go's `fmt.Sprintln`: operands separated by spaces, then a newline. */
export function sprintln(args: readonly Value[]): string {
  return args.map((a) => fmtArg(a, "v", {})).join(" ") + "\n";
}

/**
 * Go's `fmt.Sprintf` for the verbs cache keys use: `%v %s %d %q %x %X %t %c
 * %U %b %o %O %e %E %f %F %g %G %T %%`, flags `+ - # 0 space`, width and
 * precision (also `*`). Mistakes are printed as Go prints them:
 * `%!d(string=abc)`, `%!s(MISSING)`, `%!(EXTRA int=1)`.
 *
 * @example
 * ```ts
 * sprintf("%s-%05d", ["build", 42n]); // "build-00042"
 * ```
 */
export function sprintf(format: string, args: readonly Value[]): string {
  let out = "";
  let argNum = 0;
  let i = 0;
  const n = format.length;
  while (i < n) {
    const pct = format.indexOf("%", i);
    if (pct < 0) {
      out += format.slice(i);
      break;
    }
    out += format.slice(i, pct);
    i = pct + 1;
    const f: Flags = {};
    flags: for (; i < n; i++) {
      switch (format[i]) {
        case "#":
          f.sharp = true;
          break;
        case "0":
          f.zero = !f.minus;
          break;
        case "+":
          f.plus = true;
          break;
        case "-":
          f.minus = true;
          f.zero = false;
          break;
        case " ":
          f.space = true;
          break;
        default:
          break flags;
      }
    }
    const num = (): number | undefined => {
      if (format[i] === "*") {
        i++;
        const a = args[argNum++];
        if (typeof a !== "bigint") {
          out += "%!(BADWIDTH)";
          return undefined;
        }
        return Number(a);
      }
      const m = /^[0-9]+/.exec(format.slice(i));
      if (!m) return undefined;
      i += m[0].length;
      return Number(m[0]);
    };
    f.width = num();
    if (f.width !== undefined && f.width < 0) {
      f.minus = true;
      f.zero = false;
      f.width = -f.width;
    }
    if (format[i] === ".") {
      i++;
      f.prec = num() ?? 0;
      if (f.prec < 0) f.prec = undefined;
    }
    if (i >= n) {
      out += "%!(NOVERB)";
      break;
    }
    const verb = String.fromCodePoint(format.codePointAt(i)!);
    i += verb.length;
    if (verb === "%") {
      out += "%";
      continue;
    }
    if (argNum >= args.length) {
      out += `%!${verb}(MISSING)`;
      continue;
    }
    out += fmtArg(args[argNum++], verb, f);
  }
  if (argNum < args.length) {
    const extra = args.slice(argNum).map((a) =>
      a === null ? "<nil>" : `${goTypeName(a)}=${fmtArg(a, "v", {})}`
    );
    out += `%!(EXTRA ${extra.join(", ")})`;
  }
  return out;
}

function badVerb(v: Value, verb: string): string {
  return v === null ? `%!${verb}(<nil>)` : `%!${verb}(${goTypeName(v)}=${fmtArg(v, "v", {})})`;
}

function pad(s: string, f: Flags): string {
  const len = [...s].length;
  if (f.width === undefined || len >= f.width) return s;
  const fill = (f.zero && !f.minus ? "0" : " ").repeat(f.width - len);
  return f.minus ? s + fill : fill + s;
}

function fmtArg(v: Value, verb: string, f: Flags): string {
  if (verb === "T") return pad(goTypeName(v), f);
  if (v === null) return verb === "v" ? pad("<nil>", f) : badVerb(v, verb);
  if (typeof v === "boolean") return verb === "t" || verb === "v" ? pad(String(v), f) : badVerb(v, verb);
  if (typeof v === "bigint") return fmtInt(v, verb, f) ?? badVerb(v, verb);
  if (typeof v === "number") return fmtFloat(v, verb, f) ?? badVerb(v, verb);
  if (typeof v === "string") return fmtString(v, verb, f) ?? badVerb(v, verb);
  const parts = [...v.fields].map(([k, x]) => (verb === "v" && f.plus ? `${k}:` : "") + fmtArg(x, verb, f));
  return `{${parts.join(" ")}}`;
}

function fmtInt(v: bigint, verb: string, f: Flags): string | undefined {
  const bases: Record<string, number> = { v: 10, d: 10, b: 2, o: 8, O: 8, x: 16, X: 16 };
  if (verb === "c") return pad(String.fromCodePoint(validRune(v)), f);
  if (verb === "q") return pad(goQuoteRune(validRune(v)), f);
  if (verb === "U") {
    const u = `U+${v.toString(16).toUpperCase().padStart(4, "0")}`;
    const r = validRune(v);
    return pad(f.sharp && isPrint(r) ? `${u} '${String.fromCodePoint(r)}'` : u, f);
  }
  const base = bases[verb];
  if (base === undefined) return undefined;
  const neg = v < 0n;
  let digits = (neg ? -v : v).toString(base);
  if (verb === "X") digits = digits.toUpperCase();
  const sign = neg ? "-" : f.plus ? "+" : f.space ? " " : "";
  if (f.prec !== undefined) digits = f.prec === 0 && v === 0n ? "" : digits.padStart(f.prec, "0");
  else if (f.zero && !f.minus && f.width !== undefined) digits = digits.padStart(f.width - sign.length, "0");
  let prefix = "";
  if (verb === "O") prefix = "0o";
  else if (f.sharp && base === 16) prefix = verb === "X" ? "0X" : "0x";
  else if (f.sharp && base === 2) prefix = "0b";
  else if (f.sharp && base === 8 && !digits.startsWith("0")) prefix = "0";
  return pad(sign + prefix + digits, { ...f, zero: false });
}

function validRune(v: bigint): number {
  return v < 0n || v > 0x10ffffn || (v >= 0xd800n && v < 0xe000n) ? 0xfffd : Number(v);
}

function fmtFloat(x: number, verb: string, f: Flags): string | undefined {
  let body: string;
  const abs = Math.abs(x);
  switch (verb) {
    case "v":
    case "g":
    case "G":
      body = formatG(abs, f.prec ?? -1, verb === "G");
      break;
    case "e":
    case "E":
      body = formatE(abs, f.prec ?? 6, verb === "E");
      break;
    case "f":
    case "F":
      body = formatF(abs, f.prec ?? 6);
      break;
    default:
      return undefined;
  }
  if (Number.isNaN(x)) return pad(f.plus ? "+NaN" : f.space ? " NaN" : "NaN", { ...f, zero: false });
  const sign = x < 0 || Object.is(x, -0) ? "-" : f.plus || !Number.isFinite(x) ? "+" : f.space ? " " : "";
  if (!Number.isFinite(x)) return pad(sign + "Inf", { ...f, zero: false });
  if (f.zero && !f.minus && f.width !== undefined) body = body.padStart(f.width - sign.length, "0");
  return pad(sign + body, { ...f, zero: false });
}

/** Decimal digits (trailing zeros removed) and decimal point position of x ≥ 0, as strconv's decimal. */
function decimalDigits(x: number, significant?: number): { d: string; dp: number } {
  if (x === 0) return { d: "", dp: 0 };
  const [m, e] = (significant === undefined ? x.toExponential() : x.toExponential(significant - 1)).split(
    "e",
  );
  return { d: m.replace(".", "").replace(/0+$/, ""), dp: Number(e) + 1 };
}

function fmtE(d: string, dp: number, decimals: number, upper: boolean): string {
  let frac = "";
  for (let i = 1; i <= decimals; i++) frac += d[i] ?? "0";
  const exp = d.length === 0 ? 0 : dp - 1;
  const e = String(Math.abs(exp)).padStart(2, "0");
  return (d[0] ?? "0") + (decimals > 0 ? "." + frac : "") + (upper ? "E" : "e") + (exp < 0 ? "-" : "+") + e;
}

function fmtF(d: string, dp: number, decimals: number): string {
  let int = "";
  for (let i = 0; i < dp; i++) int += d[i] ?? "0";
  let frac = "";
  for (let i = 0; i < decimals; i++) frac += d[dp + i] !== undefined && dp + i >= 0 ? d[dp + i] : "0";
  return (int || "0") + (decimals > 0 ? "." + frac : "");
}

function formatE(x: number, prec: number, upper: boolean): string {
  if (!Number.isFinite(x)) return "";
  const { d, dp } = decimalDigits(x, prec + 1);
  return fmtE(d, dp, prec, upper);
}

function formatF(x: number, prec: number): string {
  if (!Number.isFinite(x)) return "";
  if (x < 1e21) return x.toFixed(Math.min(prec, 100));
  const { d, dp } = decimalDigits(x);
  return fmtF(d, dp, prec);
}

function formatG(x: number, p: number, upper: boolean): string {
  if (!Number.isFinite(x)) return "";
  const shortest = p < 0;
  if (p === 0) p = 1;
  const { d, dp } = shortest ? decimalDigits(x) : decimalDigits(x, p);
  let eprec = shortest ? 6 : p;
  if (!shortest && eprec > d.length && d.length >= dp) eprec = d.length;
  let prec = shortest ? d.length : p;
  const exp = dp - 1;
  if (exp < -4 || exp >= eprec) return fmtE(d, dp, Math.min(prec, d.length) - 1, upper);
  if (prec > dp) prec = d.length;
  return fmtF(d, dp, Math.max(prec - dp, 0));
}

function fmtString(s: string, verb: string, f: Flags): string | undefined {
  switch (verb) {
    case "v":
    case "s":
      return pad(f.prec === undefined ? s : [...s].slice(0, f.prec).join(""), f);
    case "q": {
      const t = f.prec === undefined ? s : [...s].slice(0, f.prec).join("");
      return pad(f.sharp && canBackquote(t) ? "`" + t + "`" : goQuote(t), f);
    }
    case "x":
    case "X": {
      let bytes = [...new TextEncoder().encode(s)];
      if (f.prec !== undefined) bytes = bytes.slice(0, f.prec);
      const hex = bytes.map((b) => b.toString(16).padStart(2, "0"));
      const px = verb === "X" ? "0X" : "0x";
      let out = f.space
        ? hex.map((h) => (f.sharp ? px : "") + h).join(" ")
        : (f.sharp && hex.length ? px : "") + hex.join("");
      if (verb === "X") out = out.toUpperCase();
      return pad(out, f);
    }
  }
  return undefined;
}

function isPrint(cp: number): boolean {
  return cp === 0x20 || /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u.test(String.fromCodePoint(cp));
}

function canBackquote(s: string): boolean {
  return !/[`\uFEFF]/.test(s) && ![...s].some((c) => c !== "\t" && (c < " " || c === "\x7f"));
}

function quoteWith(s: string, q: string): string {
  let out = q;
  for (const c of s) {
    const cp = c.codePointAt(0)!;
    const esc: Record<string, string> = {
      "\x07": "\\a",
      "\b": "\\b",
      "\f": "\\f",
      "\n": "\\n",
      "\r": "\\r",
      "\t": "\\t",
      "\v": "\\v",
    };
    if (c === q || c === "\\") out += "\\" + c;
    else if (isPrint(cp)) out += c;
    else if (esc[c]) out += esc[c];
    else if (cp < 0x20 || cp === 0x7f) out += "\\x" + cp.toString(16).padStart(2, "0");
    else if (cp < 0x10000) out += "\\u" + cp.toString(16).padStart(4, "0");
    else out += "\\U" + cp.toString(16).padStart(8, "0");
  }
  return out + q;
}

/** Go's `strconv.Quote`: a double-quoted string with Go escapes. */
export function goQuote(s: string): string {
  return quoteWith(s, '"');
}

function goQuoteRune(cp: number): string {
  return quoteWith(String.fromCodePoint(cp), "'");
}

// ── built-in functions (Go: text/template/funcs.go) ──────────────────────

const textEncoder = new TextEncoder();

/** Go's `evalArgs` for html/js/urlquery: a lone string as is, else `fmt.Sprint`. */
function argsText(args: Value[]): string {
  return args.length === 1 && typeof args[0] === "string" ? args[0] : sprint(args);
}

function basicKind(v: Value): string {
  if (v === null) return "invalid";
  if (v instanceof GoStruct) return "struct";
  return { string: "string", bigint: "int", number: "float", boolean: "bool" }[typeof v as "string"];
}

function valuesEqual(a: Value, b: Value): boolean {
  if (a instanceof GoStruct && b instanceof GoStruct) {
    return a.typeName === b.typeName &&
      [...a.fields].every(([k, x]) => valuesEqual(x, b.fields.get(k) ?? null));
  }
  return a === b;
}

function eq(a: Value, ...rest: Value[]): boolean {
  if (rest.length === 0) throw new Error("missing argument for comparison");
  for (const b of rest) {
    if (basicKind(a) !== basicKind(b)) {
      if (a !== null && b !== null) throw new Error("incompatible types for comparison");
    } else if (valuesEqual(a, b)) return true;
  }
  return false;
}

function lt(a: Value, b: Value): boolean {
  const ka = basicKind(a);
  const kb = basicKind(b);
  for (const k of [ka, kb]) {
    if (!["int", "float", "string", "bool"].includes(k)) throw new Error("invalid type for comparison");
  }
  if (ka !== kb) throw new Error("incompatible types for comparison");
  if (ka === "bool") throw new Error("invalid type for comparison");
  return (a as string) < (b as string);
}

function indexArg(v: Value, cap: number): number {
  if (v === null) throw new Error("cannot index slice/array with nil");
  if (typeof v !== "bigint") throw new Error(`cannot index slice/array with type ${goTypeName(v)}`);
  if (v < 0n || v > BigInt(cap)) throw new Error(`index out of range: ${v}`);
  return Number(v);
}

const builtin = (
  params: ParamType[],
  call: TemplateFunc["call"],
  variadic?: ParamType,
): TemplateFunc => ({ params, call, variadic });

/** Go's text/template built-in functions. */
export const BUILTINS: FuncMap = {
  and: builtin(["any"], (a) => a, "any"),
  or: builtin(["any"], (a) => a, "any"),
  not: builtin(["any"], (a) => !isTrue(a)),
  call: builtin(["any"], (f) => {
    throw new Error(f === null ? "call of nil" : `non-function of type ${goTypeName(f)}`);
  }, "any"),
  html: builtin(
    [],
    (...args) =>
      argsText(args).replace(
        /[\0"'&<>]/g,
        (c) => ({ "\0": "\uFFFD", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]!,
      ),
    "any",
  ),
  js: builtin([], (...args) => {
    let out = "";
    for (const c of argsText(args)) {
      const cp = c.codePointAt(0)!;
      const named: Record<string, string> = { "\\": "\\\\", "'": "\\'", '"': '\\"' };
      if (named[c]) out += named[c];
      else if ("<>&=`".includes(c) || cp < 0x20 || (cp >= 0x80 && !isPrint(cp))) {
        out += "\\u" + cp.toString(16).toUpperCase().padStart(4, "0");
      } else out += c;
    }
    return out;
  }, "any"),
  len: builtin(["any"], (v) => {
    if (typeof v === "string") return BigInt(textEncoder.encode(v).length);
    throw new Error(v === null ? "len of nil pointer" : `len of type ${goTypeName(v)}`);
  }),
  index: builtin(["any"], (item, ...indexes) => {
    let v = item;
    for (const i of indexes) {
      if (v === null) throw new Error("index of untyped nil");
      if (typeof v !== "string") throw new Error(`can't index item of type ${goTypeName(v)}`);
      const bytes = textEncoder.encode(v);
      const x = indexArg(i, bytes.length);
      if (x === bytes.length) throw new Error(`index out of range: ${x}`);
      v = BigInt(bytes[x]);
    }
    return v;
  }, "any"),
  slice: builtin(["any"], (item, ...indexes) => {
    if (item === null) throw new Error("slice of untyped nil");
    if (typeof item !== "string") throw new Error(`can't slice item of type ${goTypeName(item)}`);
    if (indexes.length > 2) throw new Error("cannot 3-index slice a string");
    const bytes = textEncoder.encode(item);
    const idx = indexes.map((i) => indexArg(i, bytes.length));
    const [from = 0, to = bytes.length] = idx;
    if (from > to) throw new Error(`invalid slice index: ${from} > ${to}`);
    return new TextDecoder().decode(bytes.subarray(from, to));
  }, "any"),
  print: builtin([], (...args) => sprint(args), "any"),
  printf: builtin(["string"], (format, ...args) => sprintf(format as string, args), "any"),
  println: builtin([], (...args) => sprintln(args), "any"),
  urlquery: builtin([], (...args) => {
    let out = "";
    for (const b of textEncoder.encode(argsText(args))) {
      const c = String.fromCharCode(b);
      if (/[A-Za-z0-9\-_.~]/.test(c)) out += c;
      else if (c === " ") out += "+";
      else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
    }
    return out;
  }, "any"),
  eq: builtin(["any"], eq, "any"),
  ne: builtin(["any", "any"], (a, b) => !eq(a, b)),
  lt: builtin(["any", "any"], (a, b) => lt(a, b)),
  le: builtin(["any", "any"], (a, b) => lt(a, b) || eq(a, b)),
  gt: builtin(["any", "any"], (a, b) => !(lt(a, b) || eq(a, b))),
  ge: builtin(["any", "any"], (a, b) => !lt(a, b)),
};
