/**
 * The Go plugin's multipart manifest (A§5.6): an object stored as parts
 * `<key>.part1…N` plus, under `<key>` itself, the XML
 * `<CompleteMultipartUpload><Part><PartNumber/><ETag/><Key/></Part>…<Checksum>md5</Checksum></CompleteMultipartUpload>`
 * exactly as Go's `encoding/xml` marshals it (no declaration, no whitespace,
 * Go's text escaping), so the Go plugin restores what we write. We add a
 * `<Size>` element (the total byte count), which Go's decoder ignores.
 *
 * Parsing treats the manifest as hostile: a size cap, part numbers exactly
 * 1…N, non-empty part keys without control characters, a hex checksum.
 *
 * @module
 */

/** One part of a multipart object. */
export interface ManifestPart {
  /** 1-based position. */
  number: number;
  /** The part's ETag (quotes stripped). */
  etag: string;
  /** The object key the part is stored under (`<key>.part<N>`). */
  key: string;
}

/** A parsed manifest. */
export interface Manifest {
  /** Parts ordered by number, numbered 1…N. */
  parts: ManifestPart[];
  /** MD5 hex of the whole object, when the writer recorded it. */
  checksum?: string;
  /** Total size, when we wrote the manifest (Go's manifests do not carry it). */
  size?: number;
}

/** Largest manifest we read (10 000 parts with long keys fit easily). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** The part key the Go plugin uses: `<key>.part<N>`. */
export function partKey(key: string, number: number): string {
  return `${key}.part${number}`;
}

/** Matches a part object name, for hiding parts from listings. */
export const PART_NAME = /^(.*)\.part(\d+)$/s;

/** Go's `xml.EscapeText`. */
function escapeText(s: string): string {
  return s.replace(/["'&<>\t\n\r]/g, (c) =>
    ({
      '"': "&#34;",
      "'": "&#39;",
      "&": "&amp;",
      "<": "&lt;",
      ">": "&gt;",
      "\t": "&#x9;",
      "\n": "&#xA;",
      "\r": "&#xD;",
    })[c]!);
}

function unescapeText(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e[0] === "#") {
      const code = e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return code <= 0x10ffff ? String.fromCodePoint(code) : "\ufffd";
    }
    return ({ amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" } as Record<string, string>)[e];
  });
}

/**
 * The manifest XML as the Go plugin writes it (plus `<Size>`).
 *
 * @example
 * ```ts
 * buildManifest({ parts: [{ number: 1, etag: "e1", key: "k.part1" }], checksum: "d41d8cd98f00b204e9800998ecf8427e", size: 0 });
 * // <CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e1</ETag><Key>k.part1</Key></Part>…
 * ```
 */
export function buildManifest(m: Manifest): string {
  const parts = [...m.parts].sort((a, b) => a.number - b.number).map((p) =>
    `<Part><PartNumber>${p.number}</PartNumber><ETag>${escapeText(p.etag)}</ETag><Key>${
      escapeText(p.key)
    }</Key></Part>`
  ).join("");
  const checksum = m.checksum ? `<Checksum>${m.checksum}</Checksum>` : "";
  const size = m.size !== undefined ? `<Size>${m.size}</Size>` : "";
  return `<CompleteMultipartUpload>${parts}${checksum}${size}</CompleteMultipartUpload>`;
}

const ROOT = /^\uFEFF?\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--[\s\S]*?-->\s*)*<CompleteMultipartUpload[\s>]/;

/**
 * Whether the first bytes of an object look like a manifest (the root
 * element, after an optional BOM, declaration and comments). Archives never
 * start this way: tar starts with an entry name, gzip and zstd with binary
 * magic.
 *
 * @example
 * ```ts
 * looksLikeManifest(new TextEncoder().encode("<CompleteMultipartUpload><Part>")); // true
 * ```
 */
export function looksLikeManifest(head: Uint8Array): boolean {
  const text = new TextDecoder().decode(head.subarray(0, 512));
  return ROOT.test(text);
}

function element(body: string, name: string): string | undefined {
  const m = body.match(new RegExp(`<${name}(?:\\s[^>]*)?>([^<]*)</${name}>`));
  return m ? unescapeText(m[1]).trim() : undefined;
}

/** A manifest that cannot be used (hostile or damaged). */
export class ManifestError extends Error {
  constructor(message: string) {
    super(`invalid multipart manifest: ${message}`);
    this.name = "ManifestError";
  }
}

/**
 * Parses a manifest, checking everything: part numbers exactly 1…N, keys
 * present and printable, the checksum 32 hex digits.
 *
 * @example
 * ```ts
 * const m = parseManifest("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e</ETag><Key>k.part1</Key></Part></CompleteMultipartUpload>", "k");
 * m.parts[0].key; // "k.part1"
 * ```
 */
export function parseManifest(xml: string, key: string): Manifest {
  if (xml.length > MAX_MANIFEST_BYTES) throw new ManifestError(`larger than ${MAX_MANIFEST_BYTES} bytes`);
  if (!ROOT.test(xml)) throw new ManifestError("the root element is not CompleteMultipartUpload");
  if (!/<\/CompleteMultipartUpload>\s*$/.test(xml)) throw new ManifestError("truncated");
  const parts: ManifestPart[] = [];
  for (const m of xml.matchAll(/<Part(?:\s[^>]*)?>([\s\S]*?)<\/Part>/g)) {
    const numberText = element(m[1], "PartNumber") ?? "";
    if (!/^[1-9][0-9]{0,5}$/.test(numberText)) {
      throw new ManifestError(`part number ${JSON.stringify(numberText.slice(0, 20))}`);
    }
    const number = Number(numberText);
    const etag = (element(m[1], "ETag") ?? "").replace(/^"|"$/g, "");
    const partName = element(m[1], "Key") || partKey(key, number);
    // deno-lint-ignore no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(partName)) {
      throw new ManifestError(`part ${number} has a control character`);
    }
    parts.push({ number, etag, key: partName });
  }
  if (parts.length === 0) throw new ManifestError("no parts");
  parts.sort((a, b) => a.number - b.number);
  parts.forEach((p, i) => {
    if (p.number !== i + 1) throw new ManifestError(`parts are not numbered 1…${parts.length}`);
  });
  const checksum = element(xml.replace(/<Part[\s>][\s\S]*?<\/Part>/g, ""), "Checksum");
  if (checksum !== undefined && checksum !== "" && !/^[0-9a-fA-F]{32}$/.test(checksum)) {
    throw new ManifestError("the checksum is not an MD5 hex digest");
  }
  const sizeText = element(xml.replace(/<Part[\s>][\s\S]*?<\/Part>/g, ""), "Size");
  const size = sizeText !== undefined && /^\d{1,16}$/.test(sizeText) ? Number(sizeText) : undefined;
  return { parts, checksum: checksum ? checksum.toLowerCase() : undefined, size };
}
