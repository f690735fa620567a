import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
    decodeFrame,
    encodeFrame,
    FrameError,
    MIN_FRAME_SIZE,
    parseMemberId,
    parseMemberList,
    payloadBytes,
    RESERVED_EVENTS,
} from "../codec.js";

const A = "11111111-1111-4111-8111-111111111111";
const B = "22222222-2222-4222-8222-222222222222";

/**
 * Build the bytes of a frame from PROTOCOL.md §8 notation without the codec:
 * each part is [declared length, ASCII text].
 */
function frameBytes(parts) {
    const bytes = [];
    for (const [length, ascii] of parts) {
        bytes.push((length >>> 24) & 0xff, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff);
        for (const character of ascii) {
            const code = character.charCodeAt(0);
            assert.ok(code < 0x80, "test vectors are ASCII");
            bytes.push(code);
        }
    }
    return new Uint8Array(bytes);
}

function hex(bytes) {
    return Buffer.from(bytes).toString("hex");
}

// PROTOCOL.md §8, in order: what it says, its size, its fields, its parts as written there.
const VECTORS = [
    {
        name: "S->A root join_ack, A alone",
        size: 70,
        frame: { room: "root", event: "join_ack", dst: "", src: A, payload: "[]" },
        parts: [[0x04, "root"], [0x08, "join_ack"], [0x00, ""], [0x24, A], [0x02, "[]"]],
    },
    {
        name: "A->S join lobby",
        size: 29,
        frame: { room: "lobby", event: "join", dst: "", src: "", payload: "" },
        parts: [[0x05, "lobby"], [0x04, "join"], [0x00, ""], [0x00, ""], [0x00, ""]],
    },
    {
        name: "S->B new_member in lobby",
        size: 71,
        frame: { room: "lobby", event: "new_member", dst: "", src: "", payload: A },
        parts: [[0x05, "lobby"], [0x0a, "new_member"], [0x00, ""], [0x00, ""], [0x24, A]],
    },
    {
        name: "A->S lobby chat \"hi\"",
        size: 67,
        frame: { room: "lobby", event: "chat", dst: "", src: A, payload: "hi" },
        parts: [[0x05, "lobby"], [0x04, "chat"], [0x00, ""], [0x24, A], [0x02, "hi"]],
    },
    {
        name: "A->S leave lobby",
        size: 138,
        frame: { room: "lobby", event: "leave", dst: A, src: A, payload: A },
        parts: [[0x05, "lobby"], [0x05, "leave"], [0x24, A], [0x24, A], [0x24, A]],
    },
    {
        name: "S->A leave_ack",
        size: 106,
        frame: { room: "lobby", event: "leave_ack", dst: "", src: A, payload: A },
        parts: [[0x05, "lobby"], [0x09, "leave_ack"], [0x00, ""], [0x24, A], [0x24, A]],
    },
    {
        name: "S->B member_left",
        size: 72,
        frame: { room: "lobby", event: "member_left", dst: "", src: "", payload: A },
        parts: [[0x05, "lobby"], [0x0b, "member_left"], [0x00, ""], [0x00, ""], [0x24, A]],
    },
];

function asFields(frame) {
    return {
        room: frame.room,
        event: frame.event,
        dst: frame.dst,
        src: frame.src,
        payload: Buffer.from(payloadBytes(frame.payload)).toString("latin1"),
    };
}

describe("PROTOCOL.md §8 byte examples", function () {
    for (const vector of VECTORS) {
        test("encodes " + vector.name + " (" + vector.size + " bytes)", function () {
            const expected = frameBytes(vector.parts);
            assert.equal(expected.byteLength, vector.size, "the vector as written has the size PROTOCOL.md says");
            assert.equal(hex(encodeFrame(vector.frame)), hex(expected));
        });

        test("decodes " + vector.name, function () {
            const decoded = decodeFrame(frameBytes(vector.parts));
            assert.ok(decoded.payload instanceof Uint8Array);
            assert.deepEqual(asFields(decoded), asFields(vector.frame));
        });
    }

    test("B receives the same 67 bytes A sent for chat", function () {
        const sent = encodeFrame({ room: "lobby", event: "chat", dst: "", src: A, payload: "hi" });
        const received = decodeFrame(sent);
        assert.equal(hex(encodeFrame(received)), hex(sent));
        assert.equal(sent.byteLength, 67);
    });

    test("B's ID is a 36-byte field too", function () {
        const frame = encodeFrame({ room: "lobby", event: "new_member", payload: B });
        assert.equal(frame.byteLength, 71);
        assert.equal(decodeFrame(frame).payload.byteLength, 36);
    });
});

describe("encodeFrame", function () {
    test("counts lengths in UTF-8 bytes for non-ASCII strings", function () {
        const frame = encodeFrame({ room: "é", event: "€", dst: "", src: "🌍", payload: "日本" });
        assert.equal(
            hex(frame),
            "00000002c3a9" + "00000003e282ac" + "00000000" + "00000004f09f8c8d" + "00000006e697a5e69cac",
        );
    });

    test("round-trips non-ASCII room, event, ids and payload", function () {
        const frame = { room: "café-☕", event: "grüße", dst: "ünïcødé", src: "Ελληνικά", payload: "héllo 🌍 日本語" };
        const decoded = decodeFrame(encodeFrame(frame));
        assert.equal(decoded.room, frame.room);
        assert.equal(decoded.event, frame.event);
        assert.equal(decoded.dst, frame.dst);
        assert.equal(decoded.src, frame.src);
        assert.equal(Buffer.from(decoded.payload).toString("utf8"), frame.payload);
    });

    test("takes every binary payload type, and only the bytes a view covers", function () {
        const backing = new Uint8Array([9, 9, 1, 2, 3, 4, 9, 9]);
        const cases = [
            ["ArrayBuffer", new Uint8Array([1, 2, 3, 4]).buffer, [1, 2, 3, 4]],
            ["Uint8Array at an offset", backing.subarray(2, 6), [1, 2, 3, 4]],
            ["Int8Array", new Int8Array([-1, 1]), [0xff, 0x01]],
            ["Uint16Array", new Uint16Array(backing.buffer, 2, 2), [1, 2, 3, 4]],
            ["Float32Array", new Float32Array([1]), Array.from(new Uint8Array(new Float32Array([1]).buffer))],
            ["BigInt64Array", new BigInt64Array([1n]), Array.from(new Uint8Array(new BigInt64Array([1n]).buffer))],
            ["DataView at an offset", new DataView(backing.buffer, 2, 4), [1, 2, 3, 4]],
            ["Uint8ClampedArray", new Uint8ClampedArray([255, 0]), [255, 0]],
            ["Node Buffer", Buffer.from([5, 6]), [5, 6]],
            ["SharedArrayBuffer", new Uint8Array(new SharedArrayBuffer(2)).fill(7).buffer, [7, 7]],
            ["empty string", "", []],
            ["undefined", undefined, []],
            ["null", null, []],
        ];
        for (const [name, payload, expected] of cases) {
            const decoded = decodeFrame(encodeFrame({ room: "r", event: "e", payload }));
            assert.deepEqual(Array.from(decoded.payload), expected, name);
        }
    });

    test("refuses payloads of other types", function () {
        for (const payload of [42, true, { a: 1 }, [1, 2], Symbol("s")]) {
            assert.throws(() => encodeFrame({ room: "r", event: "e", payload }), TypeError);
        }
    });

    test("refuses string fields that are not strings", function () {
        assert.throws(() => encodeFrame({ room: 1, event: "e" }), /room/);
        assert.throws(() => encodeFrame({ room: "r", event: null }), /event/);
        assert.throws(() => encodeFrame({ room: "r", event: "e", dst: 5 }), /dst/);
        assert.throws(() => encodeFrame(null), TypeError);
    });

    test("the smallest frame is five empty fields", function () {
        assert.equal(hex(encodeFrame({ room: "", event: "" })), "00".repeat(MIN_FRAME_SIZE));
    });
});

describe("decodeFrame strictness", function () {
    const valid = encodeFrame({ room: "lobby", event: "chat", dst: B, src: A, payload: "hi there" });

    test("every truncation of a valid frame is malformed", function () {
        for (let size = 0; size < valid.byteLength; size += 1) {
            assert.throws(() => decodeFrame(valid.slice(0, size)), FrameError, "size " + size);
        }
    });

    test("trailing bytes are malformed", function () {
        const longer = new Uint8Array(valid.byteLength + 1);
        longer.set(valid);
        assert.throws(() => decodeFrame(longer), (error) => error instanceof FrameError && /trailing/.test(error.reason));
    });

    test("a length past the end is malformed, in any field", function () {
        // Offsets of the five length prefixes in `valid`.
        const prefixOffsets = [];
        let offset = 0;
        for (let field = 0; field < 5; field += 1) {
            prefixOffsets.push(offset);
            offset += 4 + new DataView(valid.buffer).getUint32(offset);
        }
        for (const [field, prefix] of prefixOffsets.entries()) {
            for (const bogus of [valid.byteLength, 0x7fffffff, 0xffffffff]) {
                const broken = valid.slice();
                new DataView(broken.buffer).setUint32(prefix, bogus);
                assert.throws(
                    () => decodeFrame(broken),
                    (error) => error instanceof FrameError && error.offset <= broken.byteLength,
                    "field " + field + " length " + bogus,
                );
            }
        }
    });

    test("a shorter length leaves trailing bytes or cuts the next prefix", function () {
        const broken = valid.slice();
        new DataView(broken.buffer).setUint32(0, 4); // "lobb", then "y" starts the next length
        assert.throws(() => decodeFrame(broken), FrameError);
    });

    test("a string field that is not UTF-8 is malformed, with its offset", function () {
        const bytes = frameBytes([[2, "ab"], [1, "e"], [0, ""], [0, ""], [0, ""]]);
        bytes[5] = 0xff;
        assert.throws(
            () => decodeFrame(bytes),
            (error) => error instanceof FrameError && error.offset === 5 && /room/.test(error.reason),
        );
    });

    test("a payload that is not UTF-8 is fine: it is opaque bytes", function () {
        const decoded = decodeFrame(encodeFrame({ room: "r", event: "e", payload: new Uint8Array([0xff, 0x00, 0xfe]) }));
        assert.deepEqual(Array.from(decoded.payload), [0xff, 0x00, 0xfe]);
    });

    test("reads from ArrayBuffer, views at an offset and Buffer; the payload is a copy", function () {
        const padded = new Uint8Array(valid.byteLength + 6);
        padded.set(valid, 3);
        for (const input of [valid.slice().buffer, padded.subarray(3, 3 + valid.byteLength), Buffer.from(valid)]) {
            const decoded = decodeFrame(input);
            assert.equal(decoded.room, "lobby");
            assert.equal(Buffer.from(decoded.payload).toString(), "hi there");
        }
        const source = valid.slice();
        const decoded = decodeFrame(source);
        source.fill(0);
        assert.equal(Buffer.from(decoded.payload).toString(), "hi there");
    });

    test("refuses non-binary input with a TypeError", function () {
        assert.throws(() => decodeFrame("text"), TypeError);
        assert.throws(() => decodeFrame(null), TypeError);
    });
});

describe("member payloads", function () {
    test("parseMemberList reads JSON arrays of strings and drops duplicates", function () {
        assert.deepEqual(parseMemberList(Buffer.from("[]")), []);
        assert.deepEqual(parseMemberList(Buffer.from(`["${A}","${B}"]`)), [A, B]);
        assert.deepEqual(parseMemberList(Buffer.from(`["${A}","${B}","${A}"]`)), [A, B]);
        assert.deepEqual(parseMemberList(Buffer.from('[ "é" ]')), ["é"]);
    });

    test("parseMemberList refuses anything else with a FrameError", function () {
        for (const bad of ["", "nope", "{}", '"a"', "null", "[1]", '["a",null]', "[[]]", '["a"'] ) {
            assert.throws(() => parseMemberList(Buffer.from(bad)), FrameError, bad);
        }
        assert.throws(() => parseMemberList(new Uint8Array([0x5b, 0x22, 0xff, 0x22, 0x5d])), FrameError);
    });

    test("parseMemberList takes linear time: 100,000 IDs do not block the thread for long", function () {
        const ids = Array.from({ length: 100000 }, (_, index) => "00000000-0000-4000-8000-" + String(index).padStart(12, "0"));
        const payload = Buffer.from(JSON.stringify(ids.concat(ids.slice(0, 10))));
        const started = performance.now();
        assert.deepEqual(parseMemberList(payload), ids);
        // A quadratic parse takes about 15 s here; a linear one some 50 ms. The bound only catches the former.
        const elapsed = performance.now() - started;
        assert.ok(elapsed < 5000, "took " + Math.round(elapsed) + " ms");
    });

    test("parseMemberId wants non-empty UTF-8", function () {
        assert.equal(parseMemberId(Buffer.from(A)), A);
        assert.throws(() => parseMemberId(new Uint8Array(0)), FrameError);
        assert.throws(() => parseMemberId(new Uint8Array([0xc3])), FrameError);
    });

    test("the reserved names are the protocol's eight", function () {
        assert.deepEqual(
            [...RESERVED_EVENTS].sort(),
            ["close", "join", "join_ack", "leave", "leave_ack", "member_left", "new_member", "open"],
        );
    });
});
