/**
 * The connection lifecycle against a real server (`trioroom serve`, or
 * support/ext_server.py where a handler is needed), through a TCP proxy
 * that cuts, refuses, holds back or flaps (support/proxy.js): kicks that
 * stick, a backoff a flapping server cannot reset, a suspension that ends
 * with the resume window, requests that survive a resume exactly once, the
 * URL function, the offline queue, and `root.state`.
 *
 * Bounds are generous: a slow machine makes these tests slower, not red.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { WebSocket } from "ws";

import { STATES, trioroom } from "../trioroom.js";
import { startProxy } from "./support/proxy.js";
import { EXT_SERVER_SCRIPT, startServer } from "./support/server.js";
import { next, until, within } from "./support/wait.js";

const TEST_TIMEOUT_MS = 60000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function serverFor(t, options) {
    const server = await startServer(options);
    t.after(() => server.stop());
    return server;
}

async function proxyFor(t, server, options) {
    const proxy = await startProxy(server.port, options);
    t.after(() => proxy.close());
    return proxy;
}

/** A `ws` WebSocket class that records the URL of every socket it makes. */
function countingWebSocket() {
    const urls = [];
    class CountingWebSocket extends WebSocket {
        constructor(url, protocols) {
            super(url, protocols);
            urls.push(url);
        }
    }
    return { CountingWebSocket, urls };
}

/** A client closed when the test ends; errors are collected, not logged. */
function client(t, url, options = {}) {
    const root = trioroom(url, { WebSocket, ...options });
    const errors = [];
    root.on("error", (error) => errors.push(error));
    t.after(() => root.close());
    return { root, errors };
}

describe("kicks and policy closes", { timeout: TEST_TIMEOUT_MS }, function () {
    test("a kick sticks (no reconnect within 5 s), and so does a 1009 for a message too big", async function (t) {
        const extServer = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const plainServer = await serverFor(t);
        const kicked = countingWebSocket();
        const tooBig = countingWebSocket();
        const { root: alice } = client(t, extServer.url, { WebSocket: kicked.CountingWebSocket, reconnectDelay: 50, reconnectJitter: 0 });
        const { root: bob } = client(t, plainServer.url, { WebSocket: tooBig.CountingWebSocket, reconnectDelay: 50, reconnectJitter: 0 });
        await within(Promise.all([alice.ready(), bob.ready()]), "both roots open");

        const aliceClosed = next(alice, "close", "alice's close");
        const bobClosed = next(bob, "close", "bob's close");
        await alice.request("kick").catch(() => {});
        // Over the server's max_message_size (64 KiB by default).
        bob.send("chat", new Uint8Array(70000));
        assert.deepEqual(await aliceClosed, [{ code: 4000, reason: "kicked", willReconnect: false }]);
        const [bobInfo] = await bobClosed;
        assert.equal(bobInfo.code, 1009);
        assert.equal(bobInfo.willReconnect, false);

        await sleep(5000);
        assert.deepEqual([kicked.urls.length, tooBig.urls.length], [1, 1], "no reconnect attempt");
        assert.deepEqual([alice.state, bob.state], ["closed", "closed"]);
        await assert.rejects(alice.ready(), /closed the connection with 4000/);
    });

    test("reconnectAfterKick: true comes back after a kick, as a new member", async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const { root } = client(t, server.url, { reconnectAfterKick: true, reconnectDelay: 50 });
        await within(root.ready(), "root open");
        const firstId = root.id();
        const closed = next(root, "close");
        await root.request("kick").catch(() => {});
        assert.deepEqual(await closed, [{ code: 4000, reason: "kicked", willReconnect: true }]);
        await within(until(root, "open", () => root.open(), "open again"), "open again");
        assert.notEqual(root.id(), firstId);
    });
});

describe("backoff", { timeout: TEST_TIMEOUT_MS }, function () {
    test("a flapping server does not reset the backoff", async function (t) {
        const server = await serverFor(t);
        // Every connection is cut 500 ms after it is accepted: long enough to open (or resume).
        const proxy = await proxyFor(t, server, { cutAfterMs: 500 });
        const { root } = client(t, proxy.url(server.url), { reconnectDelay: 20, reconnectMaxDelay: 10000, reconnectJitter: 0 });
        let ups = 0;
        root.on("state", (state) => {
            if (state === "open") {
                ups += 1;
            }
        });
        const attempts = [];
        await within(new Promise((resolve) => {
            root.on("reconnecting", (attempt, delay) => {
                attempts.push([attempt, delay]);
                if (attempts.length === 4) {
                    resolve();
                }
            });
        }), "four reconnect attempts");
        assert.deepEqual(attempts, [[1, 20], [2, 40], [3, 80], [4, 160]]);
        assert.ok(ups >= 2, "the server accepted in between (opened " + ups + " times)");
    });
});

describe("suspension", { timeout: TEST_TIMEOUT_MS }, function () {
    test("suspension ends after resume_window: resume_failed, then a fresh session", async function (t) {
        const server = await serverFor(t, { extraArgs: ["--resume-window", "1"] });
        const proxy = await proxyFor(t, server);
        const { root } = client(t, proxy.url(server.url), { reconnectDelay: 50, reconnectMaxDelay: 100, reconnectJitter: 0 });
        await within(root.ready(), "root open");
        const lobby = await within(root.join("lobby").joined(), "lobby open");
        const oldId = root.id();
        let attempts = 0;
        root.on("reconnecting", () => {
            attempts += 1;
        });
        const closed = next(lobby, "close", "lobby close");
        const failed = next(root, "resume_failed", "resume_failed");
        // The server is unreachable: every resume attempt fails.
        proxy.refuse(true);
        const cutAt = Date.now();
        proxy.cut();
        assert.deepEqual(await failed, ["expired"]);
        const after = Date.now() - cutAt;
        assert.ok(after >= 900, "not before the window: " + after + " ms");
        assert.ok(attempts >= 2, "it tried to resume meanwhile (" + attempts + " attempts)");
        assert.equal(root.state, "reconnecting");
        const [info] = await closed;
        assert.deepEqual([info.code, info.willReconnect], [1006, true]);

        proxy.refuse(false);
        await within(lobby.joined(), "lobby joined again");
        assert.notEqual(root.id(), oldId, "a fresh session");
        assert.equal(root.state, "open");
    });
});

describe("requests across a resume", { timeout: TEST_TIMEOUT_MS }, function () {
    test("a request cut by a resume resolves exactly once, whether the server got it or not", async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const proxy = await proxyFor(t, server);
        const { root: alice } = client(t, proxy.url(server.url), { reconnectDelay: 50, reconnectJitter: 0, requestTimeout: 20000 });
        const { root: observer } = client(t, server.url);
        await within(Promise.all([alice.ready(), observer.ready()]), "roots open");
        const calls = async (key) => (await observer.request("calls", key)).json().calls;

        // Lost on the way up: the server never sees the request; the probe finds it missing.
        proxy.hold("up");
        const lostUp = alice.request("count", "up");
        let settled = 0;
        lostUp.finally(() => {
            settled += 1;
        });
        await sleep(200);
        let resumed = next(alice, "resumed", "first resume");
        proxy.cut();
        await resumed;
        assert.deepEqual((await within(lostUp, "the request lost on the way up")).json(), { calls: 1 });

        // Lost on the way down: the server handled it; its answer comes from the replay.
        proxy.hold("down");
        const lostDown = alice.request("count", "down");
        await within((async () => {
            while ((await calls("down")) !== 1) {
                await sleep(20);
            }
        })(), "the server handled the request");
        resumed = next(alice, "resumed", "second resume");
        proxy.cut();
        await resumed;
        assert.deepEqual((await within(lostDown, "the request whose answer was lost")).json(), { calls: 1 });

        await sleep(300);
        assert.deepEqual([await calls("up"), await calls("down")], [1, 1], "each handled exactly once");
        assert.equal(settled, 1);
    });
});

describe("the URL function", { timeout: TEST_TIMEOUT_MS }, function () {
    test("is called once per attempt, and its URL (a renewed token) is used for that attempt", async function (t) {
        const server = await serverFor(t);
        const proxy = await proxyFor(t, server);
        const { CountingWebSocket, urls } = countingWebSocket();
        let calls = 0;
        async function getUrl() {
            calls += 1;
            await sleep(5);
            return proxy.url(server.url) + "?token=t" + calls;
        }
        const { root } = client(t, getUrl, { WebSocket: CountingWebSocket, reconnectDelay: 50, reconnectJitter: 0 });
        await within(root.ready(), "root open");
        // Two resumes, then two refused attempts, then a resume.
        for (let round = 0; round < 2; round += 1) {
            const resumed = next(root, "resumed");
            proxy.cut();
            await resumed;
        }
        proxy.refuse(true);
        const failedTwice = new Promise((resolve) => {
            let seen = 0;
            root.on("reconnecting", () => {
                seen += 1;
                if (seen === 3) {
                    resolve();
                }
            });
        });
        proxy.cut();
        await within(failedTwice, "two refused attempts");
        proxy.refuse(false);
        await within(next(root, "resumed"), "resumed after the refusals");
        assert.equal(calls, urls.length, "one call per attempt");
        assert.ok(calls >= 6, calls + " attempts");
        urls.forEach((url, index) => {
            assert.ok(url.startsWith(proxy.url(server.url) + "?token=t" + (index + 1)), url);
        });
        assert.match(urls.at(-1), /&resume=[^&]+&last=\d+$/, "resume parameters are added to the function's URL");
    });
});

describe("the offline queue", { timeout: TEST_TIMEOUT_MS }, function () {
    test("is kept while reconnecting, sent in order once open, and bounded", async function (t) {
        // No resume: the reconnect is a fresh session, so the room is joined again before the queue goes.
        const server = await serverFor(t, { extraArgs: ["--resume-window", "0"] });
        const proxy = await proxyFor(t, server);
        const { root: alice } = client(t, proxy.url(server.url), {
            reconnectDelay: 50,
            reconnectJitter: 0,
            offlineQueue: { maxMessages: 5, maxBytes: 10000 },
        });
        const { root: carol } = client(t, server.url);
        const [aliceRoom, carolRoom] = await within(
            Promise.all([alice.join("q").joined(), carol.join("q").joined()]),
            "both in the room",
        );
        const got = [];
        carolRoom.on("chat", (payload) => got.push(Buffer.from(payload).toString()));

        proxy.refuse(true);
        const down = next(aliceRoom, "close");
        proxy.cut();
        await down;
        assert.notEqual(alice.state, "open");
        aliceRoom.send("chat", "m0");
        const answered = aliceRoom.request("chat", "m1");
        aliceRoom.send("chat", "m2").send("chat", "m3");
        assert.throws(() => aliceRoom.send("chat", new Uint8Array(10000)), RangeError, "over the bytes");
        aliceRoom.send("chat", "m4");
        assert.throws(() => aliceRoom.send("chat", "m5"), /offline queue is full/, "over the messages");
        await assert.rejects(aliceRoom.request("chat", "m6"), RangeError);

        proxy.refuse(false);
        await within(answered, "the queued request's answer");
        await until(carolRoom, "chat", () => got.length >= 5, "the queued messages", 15000);
        assert.deepEqual(got, ["m0", "m1", "m2", "m3", "m4"]);
        // And after the flush, sends go straight out.
        aliceRoom.send("chat", "m7");
        await until(carolRoom, "chat", () => got.length === 6, "a later message");
        assert.equal(got.at(-1), "m7");
    });
});

describe("root.state", { timeout: TEST_TIMEOUT_MS }, function () {
    test("walks through connecting, open, suspended, reconnecting and closed, in order", async function (t) {
        const server = await serverFor(t, { extraArgs: ["--resume-window", "0.5"] });
        const proxy = await proxyFor(t, server);
        const { root } = client(t, proxy.url(server.url), { reconnectDelay: 50, reconnectMaxDelay: 100, reconnectJitter: 0 });
        const seen = [root.state];
        root.on("state", (state, previous) => {
            assert.equal(previous, seen.at(-1), "state events chain");
            assert.equal(root.state, state);
            seen.push(state);
        });
        await within(root.ready(), "root open");
        // A cut: suspended, then resumed.
        const resumed = next(root, "resumed");
        proxy.cut();
        await resumed;
        // A cut and the server unreachable beyond the window: suspended, then reconnecting.
        proxy.refuse(true);
        const failed = next(root, "resume_failed");
        proxy.cut();
        await failed;
        proxy.refuse(false);
        await within(until(root, "state", () => root.state === "open", "open again"), "open again");
        root.close();
        assert.deepEqual(seen, ["connecting", "open", "suspended", "open", "suspended", "reconnecting", "open", "closed"]);
        assert.deepEqual(STATES, ["connecting", "open", "suspended", "reconnecting", "closed"]);
    });
});
