/**
 * The little XML reading the fetch-based metadata requests need (S3 and
 * Azure list results and error bodies): the text of an element, entities
 * decoded. Their answers are flat and well-formed; no general parser needed.
 *
 * @module
 */

const XML_ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/**
 * Decodes XML character and entity references.
 *
 * @example
 * ```ts
 * unescapeXml("a &amp; b &#x41;"); // "a & b A"
 * ```
 */
export function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (m, e: string) => {
    if (e[0] === "#") {
      return String.fromCodePoint(
        e[1] === "x" || e[1] === "X" ? parseInt(e.slice(2), 16) : Number(e.slice(1)),
      );
    }
    return XML_ENTITIES[e] ?? m;
  });
}

/**
 * The decoded text of the first `<name>` element in `xml`, or undefined.
 *
 * @example
 * ```ts
 * xmlText("<Error><Code>NoSuchKey</Code></Error>", "Code"); // "NoSuchKey"
 * ```
 */
export function xmlText(xml: string, name: string): string | undefined {
  const m = new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(xml);
  return m ? unescapeXml(m[1]) : undefined;
}
