/**
 * The wsrooms frame codec, without I/O.
 *
 * A frame is five fields, each preceded by a 4-byte unsigned big-endian
 * length counted in bytes:
 *
 *     u32 len | room | u32 len | event | u32 len | dst | u32 len | src | u32 len | payload
 *
 * `room`, `event`, `dst` and `src` are UTF-8 strings; `payload` is opaque
 * bytes. An empty string means "absent". Decoding is strict, like the
 * server's: a length past the end, trailing bytes, or a string field that is
 * not valid UTF-8 make the frame malformed.
 *
 * @module trioroom/codec
 */

import { decodeUtf8, describe, encodeUtf8, isArrayBuffer, toUint8Array, Utf8Error } from "./utf8.js";

/** Size of one length prefix in bytes. */
export const HEADER_SIZE = 4;

/** The smallest valid frame: five empty fields. */
export const MIN_FRAME_SIZE = 5 * HEADER_SIZE;

/** Largest length a u32 prefix can hold. */
export const MAX_FIELD_SIZE = 0xffffffff;

/** The room every connection is put in on connect. */
export const ROOT_ROOM = "root";

/**
 * Event names with a meaning in the protocol; clients never send custom
 * events with these names (`open` and `close` are local events only).
 */
export const RESERVED_EVENTS = Object.freeze([
    "open",
    "close",
    "join",
    "join_ack",
    "leave",
    "leave_ack",
    "new_member",
    "member_left",
]);

const STRING_FIELDS = Object.freeze(["room", "event", "dst", "src"]);

/**
 * A frame that does not follow the wire format. `reason` says what is wrong
 * and `offset` at which byte.
 */
export class FrameError extends Error {
    /**
     * @param {string} reason
     * @param {number} offset
     */
    constructor(reason, offset) {
        super("malformed frame: " + reason + " at offset " + offset);
        this.name = "FrameError";
        this.reason = reason;
        this.offset = offset;
    }
}

/**
 * Turn a payload given by an application into bytes. Strings are UTF-8
 * encoded; binary values are viewed without copying; `undefined` and `null`
 * mean an empty payload.
 *
 * @param {string | ArrayBuffer | SharedArrayBuffer | ArrayBufferView | null | undefined} payload
 * @returns {Uint8Array}
 * @throws {TypeError} for any other type
 */
export function payloadBytes(payload) {
    if (payload === undefined || payload === null) {
        return new Uint8Array(0);
    }
    if (typeof payload === "string") {
        return encodeUtf8(payload);
    }
    if (ArrayBuffer.isView(payload) || isArrayBuffer(payload)) {
        return toUint8Array(payload);
    }
    throw new TypeError(
        "payload must be a string, an ArrayBuffer, a typed array or a DataView, got " + describe(payload),
    );
}

/**
 * Encode one frame.
 *
 * @param {{room: string, event: string, dst?: string, src?: string,
 *          payload?: string | ArrayBuffer | SharedArrayBuffer | ArrayBufferView | null}} frame
 * @returns {Uint8Array} a fresh buffer holding exactly the frame
 * @throws {TypeError} when a string field is not a string or the payload has an unsupported type
 * @throws {RangeError} when a field is longer than a u32 length can say
 */
export function encodeFrame(frame) {
    if (frame === null || typeof frame !== "object") {
        throw new TypeError("encodeFrame expects an object, got " + describe(frame));
    }
    const fields = STRING_FIELDS.map(function (name) {
        const value = frame[name] === undefined ? "" : frame[name];
        if (typeof value !== "string") {
            throw new TypeError("frame field '" + name + "' must be a string, got " + describe(value));
        }
        return encodeUtf8(value);
    });
    fields.push(payloadBytes(frame.payload));

    let size = 0;
    fields.forEach(function (bytes, index) {
        if (bytes.byteLength > MAX_FIELD_SIZE) {
            const name = index < STRING_FIELDS.length ? STRING_FIELDS[index] : "payload";
            throw new RangeError("frame field '" + name + "' is longer than " + MAX_FIELD_SIZE + " bytes");
        }
        size += HEADER_SIZE + bytes.byteLength;
    });

    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    let offset = 0;
    fields.forEach(function (bytes) {
        view.setUint32(offset, bytes.byteLength, false);
        offset += HEADER_SIZE;
        out.set(bytes, offset);
        offset += bytes.byteLength;
    });
    return out;
}

/**
 * Decode one complete frame strictly.
 *
 * @param {ArrayBuffer | SharedArrayBuffer | ArrayBufferView} data
 * @returns {{room: string, event: string, dst: string, src: string, payload: Uint8Array}}
 *     the payload is a copy, so it stays valid whatever happens to `data`
 * @throws {FrameError} when the bytes are not one well-formed frame
 * @throws {TypeError} when `data` is not binary
 */
export function decodeFrame(data) {
    const bytes = toUint8Array(data);
    const size = bytes.byteLength;
    if (size < MIN_FRAME_SIZE) {
        throw new FrameError("frame of " + size + " bytes is shorter than " + MIN_FRAME_SIZE, size);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, size);
    const frame = { room: "", event: "", dst: "", src: "", payload: new Uint8Array(0) };
    let offset = 0;

    function readField(name) {
        if (offset + HEADER_SIZE > size) {
            throw new FrameError("length of field '" + name + "' is cut off", offset);
        }
        const length = view.getUint32(offset, false);
        const start = offset + HEADER_SIZE;
        if (length > size - start) {
            throw new FrameError(
                "field '" + name + "' claims " + length + " bytes but only " + (size - start) + " remain",
                offset,
            );
        }
        offset = start + length;
        return bytes.subarray(start, start + length);
    }

    STRING_FIELDS.forEach(function (name) {
        const fieldStart = offset + HEADER_SIZE;
        const raw = readField(name);
        try {
            frame[name] = decodeUtf8(raw, { fatal: true });
        } catch (error) {
            if (error instanceof Utf8Error) {
                throw new FrameError("field '" + name + "' is not valid UTF-8", fieldStart + error.offset);
            }
            throw error;
        }
    });
    frame.payload = readField("payload").slice();
    if (offset !== size) {
        throw new FrameError(size - offset + " trailing bytes after the payload", offset);
    }
    return frame;
}

/**
 * Parse a `join_ack` payload: a JSON array of member ID strings.
 * Duplicates are dropped, keeping the first occurrence.
 *
 * @param {ArrayBuffer | ArrayBufferView} payload
 * @returns {string[]}
 * @throws {FrameError} when the payload is not a JSON array of strings
 */
export function parseMemberList(payload) {
    let parsed;
    try {
        parsed = JSON.parse(decodeUtf8(payload, { fatal: true }));
    } catch (error) {
        throw new FrameError("member list is not valid UTF-8 JSON (" + error.message + ")", 0);
    }
    if (!Array.isArray(parsed)) {
        throw new FrameError("member list is a JSON " + describe(parsed) + ", not an array", 0);
    }
    // A Set keeps the first occurrence of each ID in linear time.
    const members = new Set();
    parsed.forEach(function (member, index) {
        if (typeof member !== "string") {
            throw new FrameError("member list entry " + index + " is a " + describe(member) + ", not a string", 0);
        }
        members.add(member);
    });
    return Array.from(members);
}

/**
 * Parse a member ID payload (`new_member`, `member_left`): non-empty UTF-8.
 *
 * @param {ArrayBuffer | ArrayBufferView} payload
 * @returns {string}
 * @throws {FrameError} when the payload is empty or not valid UTF-8
 */
export function parseMemberId(payload) {
    let id;
    try {
        id = decodeUtf8(payload, { fatal: true });
    } catch (error) {
        throw new FrameError("member ID is not valid UTF-8", error.offset === undefined ? 0 : error.offset);
    }
    if (id === "") {
        throw new FrameError("member ID is empty", 0);
    }
    return id;
}
