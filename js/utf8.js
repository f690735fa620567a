/**
 * UTF-8 helpers for trioroom payloads and frame fields.
 *
 * `TextDecoder` decodes (every browser and Node has it, like the
 * `TextEncoder` this module already needs). Strict decoding makes a room or
 * member ID that is not valid UTF-8 a malformed frame instead of silently
 * turning it into U+FFFD; the decoder written by hand below only runs to
 * find the offset of the first invalid byte, or where `TextDecoder` is
 * missing.
 *
 * @module trioroom/utf8
 */

const encoder = new TextEncoder();
// ignoreBOM: a leading BOM is a payload's data, kept as U+FEFF.
const decoder = typeof TextDecoder === "function" ? new TextDecoder("utf-8", { ignoreBOM: true }) : null;
const strictDecoder = typeof TextDecoder === "function" ? new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }) : null;
const REPLACEMENT = 0xfffd;
// String.fromCharCode.apply has an argument-count limit; decode in chunks below it.
const CHUNK = 0x2000;

/**
 * Raised by strict decoding when bytes are not valid UTF-8.
 */
export class Utf8Error extends Error {
    /**
     * @param {string} message
     * @param {number} offset byte offset of the first invalid byte
     */
    constructor(message, offset) {
        super(message);
        this.name = "Utf8Error";
        this.offset = offset;
    }
}

/**
 * Encode a string as UTF-8 bytes. Lone surrogates become U+FFFD (as with
 * `TextEncoder`), so the byte length is always what is sent on the wire.
 *
 * @param {string} string
 * @returns {Uint8Array}
 */
export function encodeUtf8(string) {
    if (typeof string !== "string") {
        throw new TypeError("encodeUtf8 expects a string, got " + describe(string));
    }
    return encoder.encode(string);
}

/**
 * Decode UTF-8 bytes to a string.
 *
 * Follows the WHATWG Encoding Standard's UTF-8 decoder, so the result equals
 * `new TextDecoder().decode(bytes)` (a leading BOM is kept, not stripped:
 * a payload's bytes are data). With `fatal`, the first invalid sequence
 * throws a {@link Utf8Error} instead of decoding to U+FFFD.
 *
 * @param {ArrayBuffer | ArrayBufferView} bytes
 * @param {{fatal?: boolean}} [options]
 * @returns {string}
 */
export function decodeUtf8(bytes, options = {}) {
    const fatal = options.fatal === true;
    const input = toUint8Array(bytes);
    const native = fatal ? strictDecoder : decoder;
    if (native !== null && !(typeof SharedArrayBuffer === "function" && input.buffer instanceof SharedArrayBuffer)) {
        try {
            return native.decode(input);
        } catch (error) {
            if (!fatal) {
                throw error;
            }
            // Invalid: the decoder by hand says at which byte.
        }
    }
    return decodeByHand(input, fatal);
}

function decodeByHand(input, fatal) {
    const units = [];
    const parts = [];
    let needed = 0;
    let seen = 0;
    let codePoint = 0;
    let lower = 0x80;
    let upper = 0xbf;
    let sequenceStart = 0;

    function invalid(offset) {
        if (fatal) {
            throw new Utf8Error("invalid UTF-8 at byte " + offset, offset);
        }
        units.push(REPLACEMENT);
    }

    function flushIfFull() {
        if (units.length >= CHUNK) {
            parts.push(String.fromCharCode.apply(null, units));
            units.length = 0;
        }
    }

    for (let i = 0; i < input.length; i += 1) {
        const byte = input[i];
        if (needed === 0) {
            sequenceStart = i;
            if (byte <= 0x7f) {
                units.push(byte);
            } else if (byte >= 0xc2 && byte <= 0xdf) {
                needed = 1;
                codePoint = byte & 0x1f;
            } else if (byte >= 0xe0 && byte <= 0xef) {
                // Bounds of the second byte exclude overlong forms and surrogates.
                if (byte === 0xe0) {
                    lower = 0xa0;
                }
                if (byte === 0xed) {
                    upper = 0x9f;
                }
                needed = 2;
                codePoint = byte & 0x0f;
            } else if (byte >= 0xf0 && byte <= 0xf4) {
                // Bounds of the second byte exclude overlong forms and code points past U+10FFFF.
                if (byte === 0xf0) {
                    lower = 0x90;
                }
                if (byte === 0xf4) {
                    upper = 0x8f;
                }
                needed = 3;
                codePoint = byte & 0x07;
            } else {
                invalid(i);
            }
            flushIfFull();
            continue;
        }
        if (byte < lower || byte > upper) {
            // The standard replaces the maximal invalid subpart, then reads this byte afresh.
            needed = 0;
            seen = 0;
            codePoint = 0;
            lower = 0x80;
            upper = 0xbf;
            invalid(sequenceStart);
            i -= 1;
            flushIfFull();
            continue;
        }
        lower = 0x80;
        upper = 0xbf;
        codePoint = (codePoint << 6) | (byte & 0x3f);
        seen += 1;
        if (seen === needed) {
            if (codePoint > 0xffff) {
                const offset = codePoint - 0x10000;
                units.push(0xd800 + (offset >> 10), 0xdc00 + (offset & 0x3ff));
            } else {
                units.push(codePoint);
            }
            needed = 0;
            seen = 0;
            codePoint = 0;
            flushIfFull();
        }
    }
    if (needed !== 0) {
        invalid(sequenceStart);
    }
    parts.push(String.fromCharCode.apply(null, units));
    return parts.join("");
}

/**
 * Read a payload as text. Strings are returned unchanged; bytes are decoded
 * as UTF-8 with invalid sequences replaced by U+FFFD.
 *
 * @param {string | ArrayBuffer | ArrayBufferView | null | undefined} payload
 * @returns {string}
 */
export function text(payload) {
    if (typeof payload === "string") {
        return payload;
    }
    if (payload === undefined || payload === null) {
        return "";
    }
    return decodeUtf8(payload);
}

/**
 * Read a payload as JSON (UTF-8 decoded, then `JSON.parse`).
 *
 * @param {string | ArrayBuffer | ArrayBufferView} payload
 * @returns {any}
 * @throws {SyntaxError} when the payload is not JSON
 */
export function json(payload) {
    return JSON.parse(text(payload));
}

/**
 * View any binary value as a Uint8Array over the same memory, without copying.
 *
 * @param {ArrayBuffer | SharedArrayBuffer | ArrayBufferView} value
 * @returns {Uint8Array}
 */
export function toUint8Array(value) {
    if (value instanceof Uint8Array) {
        return value;
    }
    if (ArrayBuffer.isView(value)) {
        return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    }
    if (isArrayBuffer(value)) {
        return new Uint8Array(value);
    }
    throw new TypeError("expected an ArrayBuffer or a typed array, got " + describe(value));
}

/**
 * True for ArrayBuffer and SharedArrayBuffer, also from another realm (iframe, vm).
 *
 * @param {unknown} value
 * @returns {boolean}
 */
export function isArrayBuffer(value) {
    const tag = Object.prototype.toString.call(value);
    return tag === "[object ArrayBuffer]" || tag === "[object SharedArrayBuffer]";
}

/**
 * A short description of a value's type for error messages.
 *
 * @param {unknown} value
 * @returns {string}
 */
export function describe(value) {
    if (value === null) {
        return "null";
    }
    if (typeof value === "object") {
        return Object.prototype.toString.call(value).slice(8, -1);
    }
    return typeof value;
}
