/**
 * What a `stat` saw of an object (size, ETag), kept for the download that
 * follows it, so a restore makes one properties call, not two, and its
 * ranges are pinned to the version the stat saw. A pin is used once: a
 * restarted download (the object was replaced) asks the server again.
 *
 * @module
 */
import type { ObjectInfo } from "../backend.ts";

/** The version a download is pinned to. */
export interface Pin {
  size: number;
  etag?: string;
}

/** A properties call's answer: the object's info and ETag, or null when it does not exist. */
export type Head = { info: ObjectInfo; etag?: string } | null;

/**
 * The pins of one backend instance.
 *
 * @example
 * ```ts
 * const pins = new StatPins();
 * const info = pins.remember("key/mount", await rest.head("key/mount", "stat"));
 * const pin = await pins.take("key/mount", () => rest.head("key/mount", "get")); // no second call
 * ```
 */
export class StatPins {
  readonly #seen = new Map<string, Pin>();

  /** Keeps what a stat's properties call saw (or forgets the name when it saw nothing); returns the info. */
  remember(name: string, head: Head): ObjectInfo | null {
    if (head === null) {
      this.#seen.delete(name);
      return null;
    }
    this.#seen.set(name, { size: head.info.size, etag: head.etag });
    return head.info;
  }

  /** The pin for a download: the stat's (once), else what `head` sees now; null when the object is gone. */
  async take(name: string, head: () => Promise<Head>): Promise<Pin | null> {
    const pinned = this.#seen.get(name);
    this.#seen.delete(name);
    if (pinned !== undefined) return pinned;
    const now = await head();
    return now === null ? null : { size: now.info.size, etag: now.etag };
  }
}
