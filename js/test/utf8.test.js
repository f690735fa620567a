import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { decodeUtf8, encodeUtf8, json, text, toUint8Array, Utf8Error } from "../utf8.js";

// ignoreBOM keeps a leading BOM, as decodeUtf8 does: a payload's bytes are data.
const reference = new TextDecoder("utf-8", { ignoreBOM: true });
const strictReference = new TextDecoder("utf-8", { ignoreBOM: true, fatal: true });

/** A small deterministic PRNG (mulberry32), so failures can be replayed. */
function prng(seed) {
    let state = seed >>> 0;
    return function next() {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

const VALID = [
    [],
    [0x61, 0x62, 0x63],
    [0xc3, 0xa9], // é
    [0xe2, 0x82, 0xac], // €
    [0xf0, 0x9f, 0x8c, 0x8d], // 🌍
    [0xef, 0xbb, 0xbf, 0x61], // BOM then a
    [0x00, 0x7f, 0xc2, 0x80, 0xdf, 0xbf, 0xe0, 0xa0, 0x80, 0xef, 0xbf, 0xbf, 0xf0, 0x90, 0x80, 0x80, 0xf4, 0x8f, 0xbf, 0xbf],
];

const INVALID = [
    [0x80], // lone continuation
    [0xc3], // truncated 2-byte
    [0xe2, 0x82], // truncated 3-byte
    [0xf0, 0x9f, 0x8c], // truncated 4-byte
    [0xc0, 0xaf], // overlong
    [0xe0, 0x80, 0xaf], // overlong
    [0xed, 0xa0, 0x80], // surrogate
    [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
    [0xf5, 0x80],
    [0xff, 0xfe],
    [0x61, 0xe2, 0x28, 0xa1, 0x62], // bad continuation, then the byte is read afresh
    [0xf0, 0x9f, 0x61, 0x8c, 0x8d],
];

describe("decodeUtf8", function () {
    test("decodes valid UTF-8 like TextDecoder", function () {
        for (const bytes of VALID) {
            assert.equal(decodeUtf8(new Uint8Array(bytes)), reference.decode(new Uint8Array(bytes)), String(bytes));
            assert.equal(
                decodeUtf8(new Uint8Array(bytes), { fatal: true }),
                strictReference.decode(new Uint8Array(bytes)),
            );
        }
    });

    test("replaces invalid sequences exactly like TextDecoder", function () {
        for (const bytes of INVALID) {
            assert.equal(decodeUtf8(new Uint8Array(bytes)), reference.decode(new Uint8Array(bytes)), String(bytes));
        }
    });

    test("fatal mode throws Utf8Error on every invalid sequence", function () {
        for (const bytes of INVALID) {
            assert.throws(() => decodeUtf8(new Uint8Array(bytes), { fatal: true }), Utf8Error, String(bytes));
        }
    });

    test("matches TextDecoder on random bytes, lenient and fatal", function () {
        const random = prng(20240611);
        // Biased towards bytes that start or continue multi-byte sequences.
        const interesting = [0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff];
        for (let round = 0; round < 3000; round += 1) {
            const length = Math.floor(random() * 12);
            const bytes = new Uint8Array(length);
            for (let i = 0; i < length; i += 1) {
                bytes[i] = random() < 0.5
                    ? interesting[Math.floor(random() * interesting.length)]
                    : Math.floor(random() * 256);
            }
            assert.equal(decodeUtf8(bytes), reference.decode(bytes), "bytes " + Array.from(bytes));
            let expected;
            try {
                expected = strictReference.decode(bytes);
            } catch {
                expected = Utf8Error;
            }
            if (expected === Utf8Error) {
                assert.throws(() => decodeUtf8(bytes, { fatal: true }), Utf8Error);
            } else {
                assert.equal(decodeUtf8(bytes, { fatal: true }), expected);
            }
        }
    });

    test("round-trips every kind of character, also in long strings", function () {
        const sample = "plain ASCII, café, Grüße, Ελληνικά, 日本語, emoji 🌍🎉, edge \u0000\u007f\u0080\u07ff\u0800\uffff\u{10000}\u{10ffff}";
        assert.equal(decodeUtf8(encodeUtf8(sample)), sample);
        const long = sample.repeat(5000);
        assert.equal(decodeUtf8(encodeUtf8(long)), long);
    });

    test("reports the offset of the first invalid byte", function () {
        assert.throws(
            () => decodeUtf8(new Uint8Array([0x61, 0x62, 0xe2, 0x82, 0x28]), { fatal: true }),
            (error) => error instanceof Utf8Error && error.offset === 2,
        );
    });

    test("accepts ArrayBuffer, typed arrays at an offset and DataView", function () {
        const bytes = encodeUtf8("xxhéllo");
        assert.equal(decodeUtf8(bytes.buffer), "xxhéllo");
        assert.equal(decodeUtf8(bytes.subarray(2)), "héllo");
        assert.equal(decodeUtf8(new DataView(bytes.buffer, 2)), "héllo");
        assert.throws(() => decodeUtf8("text"), TypeError);
    });
});

describe("encodeUtf8", function () {
    test("counts bytes, not UTF-16 units", function () {
        assert.deepEqual(Array.from(encodeUtf8("é")), [0xc3, 0xa9]);
        assert.equal(encodeUtf8("🌍").byteLength, 4);
    });

    test("turns a lone surrogate into U+FFFD", function () {
        assert.deepEqual(Array.from(encodeUtf8("\ud800")), [0xef, 0xbf, 0xbd]);
    });

    test("refuses non-strings", function () {
        assert.throws(() => encodeUtf8(42), TypeError);
    });
});

describe("text and json", function () {
    test("text reads strings, buffers and views", function () {
        assert.equal(text("already text"), "already text");
        assert.equal(text(encodeUtf8("héllo 🌍")), "héllo 🌍");
        assert.equal(text(encodeUtf8("héllo").buffer), "héllo");
        assert.equal(text(new DataView(encodeUtf8("héllo").buffer)), "héllo");
        assert.equal(text(undefined), "");
        assert.equal(text(new Uint8Array([0x61, 0xff])), "a\ufffd");
    });

    test("json parses UTF-8 JSON payloads", function () {
        assert.deepEqual(json(encodeUtf8('{"grüße":["🌍",1]}')), { "grüße": ["🌍", 1] });
        assert.deepEqual(json("[1,2]"), [1, 2]);
        assert.throws(() => json(encodeUtf8("{nope")), SyntaxError);
    });

    test("toUint8Array views without copying", function () {
        const buffer = new ArrayBuffer(8);
        const view = toUint8Array(new Uint16Array(buffer, 2, 2));
        assert.equal(view.buffer, buffer);
        assert.equal(view.byteOffset, 2);
        assert.equal(view.byteLength, 4);
    });
});
