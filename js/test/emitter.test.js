import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { createEmitter } from "../emitter.js";

describe("createEmitter", function () {
    test("calls listeners in order with the arguments, this = target", function () {
        const target = {};
        const emitter = createEmitter({ target });
        const calls = [];
        emitter.on("e", function (a, b) {
            calls.push(["first", a, b, this === target]);
        });
        emitter.addListener("e", function (a) {
            calls.push(["second", a]);
        });
        assert.equal(emitter.emit("e", 1, 2), true);
        assert.equal(emitter.emit("other"), false);
        assert.deepEqual(calls, [["first", 1, 2, true], ["second", 1]]);
    });

    test("methods return the target for chaining", function () {
        const target = {};
        const emitter = createEmitter({ target });
        const listener = () => {};
        assert.equal(emitter.on("e", listener), target);
        assert.equal(emitter.off("e", listener), target);
        assert.equal(emitter.once("e", listener), target);
        assert.equal(emitter.removeAllListeners(), target);
    });

    test("off removes one registration, also of a once listener", function () {
        const emitter = createEmitter();
        let count = 0;
        const listener = () => {
            count += 1;
        };
        emitter.on("e", listener).on("e", listener);
        emitter.off("e", listener);
        emitter.emit("e");
        assert.equal(count, 1);
        emitter.off("e", listener);
        emitter.emit("e");
        assert.equal(count, 1);

        emitter.once("e", listener);
        assert.deepEqual(emitter.listeners("e"), [listener]);
        emitter.off("e", listener);
        emitter.emit("e");
        assert.equal(count, 1);
        assert.equal(emitter.listenerCount("e"), 0);
    });

    test("once fires a single time", function () {
        const emitter = createEmitter();
        const seen = [];
        emitter.once("e", (value) => seen.push(value));
        emitter.emit("e", 1);
        emitter.emit("e", 2);
        assert.deepEqual(seen, [1]);
    });

    test("changes made while emitting apply from the next emit", function () {
        const emitter = createEmitter();
        const seen = [];
        function second() {
            seen.push("second");
        }
        emitter.on("e", function first() {
            seen.push("first");
            emitter.off("e", second);
            emitter.on("e", () => seen.push("added"));
        });
        emitter.on("e", second);
        emitter.emit("e");
        assert.deepEqual(seen, ["first", "second"]);
    });

    test("a throwing listener does not stop the others; its error goes to onListenerError", function () {
        const errors = [];
        const emitter = createEmitter({ onListenerError: (error, event) => errors.push([error.message, event]) });
        const seen = [];
        emitter.on("e", () => {
            throw new Error("boom");
        });
        emitter.on("e", () => seen.push("after"));
        emitter.emit("e");
        assert.deepEqual(seen, ["after"]);
        assert.deepEqual(errors, [["boom", "e"]]);
    });

    test("removeAllListeners with and without an event; eventNames", function () {
        const emitter = createEmitter();
        emitter.on("a", () => {}).on("b", () => {});
        assert.deepEqual(emitter.eventNames().sort(), ["a", "b"]);
        emitter.removeAllListeners("a");
        assert.deepEqual(emitter.eventNames(), ["b"]);
        emitter.removeAllListeners();
        assert.deepEqual(emitter.eventNames(), []);
        assert.deepEqual(emitter.listeners(), []);
    });

    test("refuses a non-function listener and a non-string event", function () {
        const emitter = createEmitter();
        assert.throws(() => emitter.on("e", "nope"), TypeError);
        assert.throws(() => emitter.on(1, () => {}), TypeError);
    });

    test("two emitters share nothing", function () {
        const first = createEmitter();
        const second = createEmitter();
        let called = false;
        first.on("e", () => {
            called = true;
        });
        second.emit("e");
        assert.equal(called, false);
    });
});
