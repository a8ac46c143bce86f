/**
 * Minimal assertions for the tests (`jsr:@std/assert` cannot be installed
 * here: JSR is unreachable). Deep equality comes from `node:util`.
 *
 * @module
 */
import { inspect, isDeepStrictEqual } from "node:util";

/** Thrown by a failed assertion. */
export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

/** Asserts `cond` is truthy. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

/** Asserts deep (strict) equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}values differ\n  actual:   ${inspect(actual, { depth: 5 })}\n  expected: ${
        inspect(expected, { depth: 5 })
      }`,
    );
  }
}

/** Asserts deep inequality. */
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  if (isDeepStrictEqual(actual, expected)) {
    throw new AssertionError(`${msg ? msg + ": " : ""}values are equal: ${inspect(actual)}`);
  }
}

/** Asserts `text` contains `part`. */
export function assertStringIncludes(text: string, part: string, msg?: string): void {
  if (!text.includes(part)) {
    throw new AssertionError(`${msg ? msg + ": " : ""}expected ${inspect(text)} to contain ${inspect(part)}`);
  }
}

/** Asserts `text` matches `re`. */
export function assertMatch(text: string, re: RegExp, msg?: string): void {
  if (!re.test(text)) {
    throw new AssertionError(`${msg ? msg + ": " : ""}expected ${inspect(text)} to match ${re}`);
  }
}

// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;

function checkError(err: unknown, cls?: ErrorClass, includes?: string): Error {
  if (!(err instanceof Error)) throw new AssertionError(`expected an Error, got ${inspect(err)}`);
  if (cls && !(err instanceof cls)) {
    const e: Error = err;
    throw new AssertionError(`expected ${cls.name}, got ${e.name}: ${e.message}`);
  }
  if (includes !== undefined && !err.message.includes(includes)) {
    throw new AssertionError(
      `expected the error message to contain ${inspect(includes)}, got ${inspect(err.message)}`,
    );
  }
  return err;
}

/** Asserts `fn` throws; returns the error. */
export function assertThrows(fn: () => unknown, cls?: ErrorClass, includes?: string): Error {
  try {
    fn();
  } catch (err) {
    return checkError(err, cls, includes);
  }
  throw new AssertionError("expected the function to throw");
}

/** Asserts `fn` rejects; returns the error. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls?: ErrorClass,
  includes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return checkError(err, cls, includes);
  }
  throw new AssertionError("expected the promise to reject");
}
