/**
 * The trioroom.v1 extension against the real Python server: requests
 * (support/ext_server.py has handlers), resumption through a TCP proxy that
 * cuts connections (support/proxy.js), the resume window running out, and
 * plain clients that must see none of it.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { WebSocket } from "ws";

import { decodeFrame, encodeFrame } from "../codec.js";
import { ProtocolError, RequestError, ServerError, text, TimeoutError, trioroom } from "../trioroom.js";
import { startProxy } from "./support/proxy.js";
import { EXT_SERVER_SCRIPT, startServer } from "./support/server.js";
import { next, until, within } from "./support/wait.js";

const TEST_TIMEOUT_MS = 60000;
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const range = (count) => Array.from({ length: count }, (_, index) => index);

/** A server for one test, stopped when it ends. */
async function serverFor(t, options) {
    const server = await startServer(options);
    t.after(() => server.stop());
    return server;
}

/** Clients of one test, closed when it ends. */
function clientsFor(t) {
    const opened = [];
    t.after(() => opened.forEach((close) => close()));
    return {
        async connect(url, options = {}) {
            const root = trioroom(url, { WebSocket, reconnect: false, ...options });
            opened.push(() => root.close());
            await within(root.ready(), "the root join_ack");
            return root;
        },
        track(close) {
            opened.push(close);
        },
    };
}

/**
 * A WebSocket class (the `ws` package's) that records every frame its
 * sockets receive, to check what is on the wire.
 */
function recordingWebSocket() {
    const frames = [];
    const sockets = [];
    class RecordingWebSocket extends WebSocket {
        constructor(url, protocols) {
            super(url, protocols);
            sockets.push(this);
            this.on("message", (data) => frames.push(decodeFrame(data)));
        }
    }
    return { RecordingWebSocket, frames, sockets };
}

/** A WebSocket speaking the wire format directly, offering no subprotocol. */
async function rawPeer(t, url) {
    const socket = new WebSocket(url);
    t.after(() => socket.close());
    const frames = [];
    const waiters = [];
    socket.on("message", (data) => {
        frames.push(decodeFrame(data));
        waiters.slice().forEach((check) => check());
    });
    await within(new Promise((resolve, reject) => {
        socket.once("open", resolve);
        socket.once("error", reject);
    }), "raw socket open");
    function nextFrame(predicate, what) {
        return within(new Promise((resolve) => {
            function check() {
                const index = frames.findIndex(predicate);
                if (index !== -1) {
                    waiters.splice(waiters.indexOf(check), 1);
                    resolve(frames.splice(index, 1)[0]);
                }
            }
            waiters.push(check);
            check();
        }), what);
    }
    const welcome = await nextFrame(() => true, "the raw peer's first frame");
    return {
        socket,
        welcome,
        id: welcome.src,
        frames,
        nextFrame,
        send(frame) {
            socket.send(encodeFrame(frame));
        },
    };
}

/** Join `name` from each root and wait until every member list has everyone. */
async function joinAll(name, ...roots) {
    const rooms = [];
    for (const root of roots) {
        const room = root.join(name);
        await within(room.joined(), "join_ack of " + name);
        rooms.push(room);
    }
    const ids = roots.map((root) => root.id());
    for (const room of rooms) {
        await until(room, "new_member", () => ids.every((id) => room.members().includes(id)), "full member list of " + name);
    }
    return rooms;
}

describe("requests against a server with handlers", { timeout: TEST_TIMEOUT_MS * 2 }, function () {
    test("replies, handler errors, timeouts on both sides, delivery acknowledgements", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT, extraArgs: ["--request-timeout", "1"] });
        const clients = clientsFor(t);
        const alice = await clients.connect(server.url);
        const bob = await clients.connect(server.url);
        assert.equal(alice.extended(), true);

        const sum = await alice.request("add", "[1, 2, 3]");
        assert.deepEqual(sum.json(), { sum: 6 });
        assert.equal(sum.text(), '{"sum":6}');

        const empty = await alice.request("add", "[]").catch((error) => error);
        assert.ok(empty instanceof ServerError, String(empty));
        assert.deepEqual([empty.code, empty.message, empty.event, empty.room], ["empty", "nothing to add", "add", "root"]);

        const crash = await alice.request("crash").catch((error) => error);
        assert.equal(crash.code, "handler_error");
        assert.doesNotMatch(crash.message, /secret/);

        // The server gives up on its handler after --request-timeout 1 s.
        const serverTimeout = await alice.request("slow", "3").catch((error) => error);
        assert.ok(serverTimeout instanceof ServerError);
        assert.equal(serverTimeout.code, "timeout");
        // The client gives up first here; the late answer changes nothing.
        const clientTimeout = await alice.request("slow", "0.5", { timeout: 100 }).catch((error) => error);
        assert.ok(clientTimeout instanceof TimeoutError);
        assert.equal(clientTimeout.code, "timeout");
        assert.equal((await alice.request("slow", "0")).text(), "done");

        // A broadcast or a direct message as a request: answered once delivered.
        const [aliceRoom, bobRoom] = await joinAll("requests", alice, bob);
        const bobGot = next(bobRoom, "chat");
        const delivered = await aliceRoom.request("chat", "hi bob");
        assert.equal(delivered.byteLength, 0);
        assert.equal(text((await bobGot)[0]), "hi bob");
        const direct = next(bob, "poke");
        await alice.request("poke", "psst", { dst: bob.id() });
        assert.deepEqual([text((await direct)[0]), (await direct)[1]], ["psst", alice.id()]);
        const nobody = await alice.request("poke", "", { dst: "no-such-id" }).catch((error) => error);
        assert.equal(nobody.code, "unknown_destination");
    });

    test("server errors without a request are error events; a refused join rejects joined()", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const clients = clientsFor(t);
        const alice = await clients.connect(server.url);
        const rootErrors = [];
        alice.on("error", (error) => rootErrors.push(error));

        const vip = alice.join("vip");
        const vipErrors = [];
        vip.on("error", (error) => vipErrors.push(error));
        const refused = await vip.joined().catch((error) => error);
        assert.ok(refused instanceof ServerError, String(refused));
        assert.deepEqual([refused.code, refused.room, refused.event], ["join_refused", "vip", "join"]);
        assert.deepEqual(vipErrors, [refused]);
        assert.equal(alice.rooms().vip, undefined);

        const lost = next(alice, "error", "the unknown_destination error event");
        alice.send("poke", "x", "no-such-id");
        const [error] = await lost;
        assert.ok(error instanceof ServerError);
        assert.deepEqual([error.code, error.event, error.room], ["unknown_destination", "poke", "root"]);
        // The room that is allowed still works.
        await within(alice.join("lobby").joined(), "lobby join_ack");
        assert.equal(rootErrors.length, 1);
    });
});

describe("resumption through a proxy that cuts the connection", { timeout: TEST_TIMEOUT_MS * 3 }, function () {
    test("a cut mid-stream is resumed: same ID and rooms, every message once and in order, nobody saw a leave", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        // Bob sends faster than the default rate limit (100/s, burst 200) allows, and
        // more than the default queue (256 frames) while alice is away: beyond it the
        // server would end her session (buffer_overflow).
        const server = await serverFor(t, { extraArgs: ["--rate-limit", "100000", "--rate-burst", "100000", "--queue-frames", "4096"] });
        const proxy = await startProxy(server.port);
        t.after(() => proxy.close());
        const clients = clientsFor(t);
        const alice = await clients.connect(proxy.url(server.url), { reconnect: true, reconnectDelay: 50, reconnectJitter: 0, ackEvery: 16 });
        const bob = await clients.connect(server.url);
        const carol = await clients.connect(server.url);
        const bobErrors = [];
        bob.on("error", (error) => bobErrors.push(error));
        assert.equal(alice.extended(), true);
        const [aliceRoom, bobRoom, carolRoom] = await joinAll("stream", alice, bob, carol);
        const aliceId = alice.id();

        // A plain peer in the room tries to broadcast the extension's names.
        const mallory = await rawPeer(t, server.url);
        mallory.send({ room: "stream", event: "join" });
        await mallory.nextFrame((frame) => frame.event === "join_ack" && frame.room === "stream", "mallory's join_ack");

        const got = [];
        aliceRoom.on("n", (payload, sender) => {
            assert.equal(sender, bob.id());
            got.push(Number(text(payload)));
        });
        const seen = [];
        for (const name of ["open", "close", "resumed", "resume_failed", "reconnecting"]) {
            alice.on(name, (...args) => seen.push(["root " + name, ...args]));
            aliceRoom.on(name, () => seen.push(["room " + name]));
        }
        const errors = [];
        alice.on("error", (error) => errors.push(error));
        const carolSawLeave = [];
        carolRoom.on("member_left", (id) => carolSawLeave.push(id));
        const resumed = next(alice, "resumed", "alice's resumed event");

        // The server drops client events named trioroom.* (malformed), so
        // these fakes never reach alice and cannot disturb her count.
        for (const event of ["trioroom.resumed", "trioroom.session", "trioroom.not_resumed"]) {
            mallory.send({ room: "stream", event, payload: "{}" });
        }

        const TOTAL = 600;
        let sent = 0;
        let sentAtCut = -1;
        let gotAtCut = -1;
        await within(new Promise((resolve) => {
            const timer = setInterval(() => {
                for (let i = 0; i < 15 && sent < TOTAL; i += 1) {
                    bobRoom.send("n", String(sent));
                    sent += 1;
                }
                if (sentAtCut === -1 && got.length >= 150) {
                    sentAtCut = sent;
                    gotAtCut = got.length;
                    assert.equal(proxy.cut(), 1);
                }
                if (sent >= TOTAL) {
                    clearInterval(timer);
                    resolve();
                }
            }, 4);
        }), "bob's messages");
        assert.ok(sentAtCut > 0 && sentAtCut < TOTAL, "cut while messages flow: " + sentAtCut);
        await until(aliceRoom, "n", () => got.length >= TOTAL, "all " + TOTAL + " messages at alice");
        await sleep(100);
        assert.deepEqual(bobErrors.filter((error) => !(error instanceof ProtocolError)), [], "the server took all of bob's messages");
        assert.equal(bobErrors.length, 0, "the server dropped mallory's fakes: nobody saw them");
        assert.deepEqual(got, range(TOTAL), "every message once, in order");
        assert.ok(gotAtCut < TOTAL);

        const [replayed] = await resumed;
        assert.equal(typeof replayed, "number");
        assert.equal(alice.id(), aliceId, "the same ID");
        assert.equal(aliceRoom.id(), aliceId);
        assert.deepEqual(seen.map((entry) => entry[0]), ["root reconnecting", "root resumed"], "no close or open");
        assert.deepEqual(carolSawLeave, [], "nobody saw alice leave");
        assert.ok(carolRoom.members().includes(aliceId));
        assert.equal(aliceRoom.open(), true);

        const back = next(carolRoom, "chat", "alice's chat after the resume");
        aliceRoom.send("chat", "back");
        assert.deepEqual([text((await back)[0]), (await back)[1]], ["back", aliceId]);
        const answer = await alice.request("poke", "", { dst: carol.id() });
        assert.equal(answer.byteLength, 0);
    });

    test("a request answered while the socket is down gets its answer from the replay", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const proxy = await startProxy(server.port);
        t.after(() => proxy.close());
        const clients = clientsFor(t);
        // The resume comes after the handler answered: the server wrote the
        // reply to the dead socket, and replays it.
        const alice = await clients.connect(proxy.url(server.url), { reconnect: true, reconnectDelay: 1000, reconnectJitter: 0 });
        const resumed = next(alice, "resumed");
        const answer = alice.request("slow", "0.3", { timeout: 10000 });
        await sleep(100);
        proxy.cut();
        const [replayed] = await resumed;
        assert.equal((await within(answer, "the answer")).text(), "done");
        assert.ok(replayed >= 1, "the reply came with the replay");
    });

    // When the resumed socket replaces the old one while a handler runs, the
    // handler is cancelled with the old socket's tasks; the server still
    // answers the request, with error "cancelled", on the resumed session.
    test("a request whose handler is still running when the client resumes is answered", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const proxy = await startProxy(server.port);
        t.after(() => proxy.close());
        const clients = clientsFor(t);
        const alice = await clients.connect(proxy.url(server.url), { reconnect: true, reconnectDelay: 50, reconnectJitter: 0 });
        const resumed = next(alice, "resumed");
        const answer = alice.request("slow", "0.5", { timeout: 3000 });
        await sleep(100);
        proxy.cut();
        await resumed;
        await assert.rejects(answer, (err) => err.code === "cancelled");
    });

    test("after the resume window the client is told, gets a new ID and rejoins; others saw it leave", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t, { extraArgs: ["--resume-window", "0.3"] });
        const proxy = await startProxy(server.port);
        t.after(() => proxy.close());
        const clients = clientsFor(t);
        const alice = await clients.connect(proxy.url(server.url), { reconnect: true, reconnectDelay: 1500, reconnectJitter: 0 });
        const carol = await clients.connect(server.url);
        const [aliceRoom, carolRoom] = await joinAll("expiry", alice, carol);
        const oldId = alice.id();

        const order = [];
        alice.on("resume_failed", (reason) => order.push("resume_failed " + reason));
        aliceRoom.on("close", () => order.push("room close"));
        aliceRoom.on("open", () => order.push("room open"));
        const failed = next(alice, "resume_failed", "resume_failed");
        const left = until(carolRoom, "member_left", () => !carolRoom.members().includes(oldId), "carol sees alice leave");
        const reopened = next(aliceRoom, "open", "alice's room open again");
        proxy.cut();
        // The client's own window (0.3 s from the cut) ends the suspension; the server's is
        // not waited for (its retry is 1.5 s away), so which side notices first does not matter.
        await left;
        assert.deepEqual(await failed, ["expired"]);
        await reopened;
        assert.deepEqual(order, ["resume_failed expired", "room close", "room open"]);
        const newId = alice.id();
        assert.match(newId, UUID_V4);
        assert.notEqual(newId, oldId);
        assert.equal(aliceRoom.id(), newId);
        await until(carolRoom, "new_member", () => carolRoom.members().includes(newId), "carol sees the new ID join");
        assert.ok(!aliceRoom.members().includes(oldId));

        const got = next(carolRoom, "chat");
        aliceRoom.send("chat", "new me");
        assert.deepEqual([text((await got)[0]), (await got)[1]], ["new me", newId]);
    });
});

describe("plain clients see no extension traffic", { timeout: TEST_TIMEOUT_MS * 3 }, function () {
    test("extension: false speaks the plain protocol, even where an extended client gets errors", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const clients = clientsFor(t);
        const { RecordingWebSocket, frames, sockets } = recordingWebSocket();
        const plain = await clients.connect(server.url, { WebSocket: RecordingWebSocket, extension: false });
        const other = await clients.connect(server.url);
        assert.equal(plain.extended(), false);
        assert.equal(sockets[0].protocol, "");
        assert.deepEqual([frames[0].room, frames[0].event], ["root", "join_ack"], "the root join_ack comes first");

        const unsupported = await plain.request("add", "[1]").catch((error) => error);
        assert.ok(unsupported instanceof RequestError);
        assert.equal(unsupported.code, "unsupported");
        // What an extended client would be told about: a refused join, a lost direct message.
        await assert.rejects(plain.join("vip").joined(500), TimeoutError);
        plain.send("poke", "x", "no-such-id");
        const [plainRoom, otherRoom] = await joinAll("plain", plain, other);
        const got = next(plainRoom, "chat");
        otherRoom.send("chat", "hello plain");
        assert.equal(text((await got)[0]), "hello plain");
        await sleep(300);
        assert.deepEqual(frames.filter((frame) => frame.event.startsWith("trioroom.")), []);
    });

    test("a raw client offering no subprotocol gets the old protocol", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t, { script: EXT_SERVER_SCRIPT });
        const raw = await rawPeer(t, server.url);
        assert.equal(raw.socket.protocol, "");
        assert.deepEqual([raw.welcome.room, raw.welcome.event], ["root", "join_ack"]);
        raw.send({ room: "vip", event: "join" });
        raw.send({ room: "root", event: "add", src: "?1", payload: "[1]" });
        raw.send({ room: "root", event: "poke", dst: "no-such-id", src: "?2" });
        raw.send({ room: "elsewhere", event: "chat", src: "?3" });
        raw.send({ room: "root", event: "ping", dst: raw.id, payload: "marker" });
        const marker = await raw.nextFrame((frame) => frame.event === "ping", "the marker sent to itself");
        assert.equal(marker.src, raw.id);
        await sleep(200);
        assert.deepEqual(raw.frames.map((frame) => frame.event), []);
    });

    test("a plain client through the cut reconnects as before: new ID, rooms joined again", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const server = await serverFor(t);
        const proxy = await startProxy(server.port);
        t.after(() => proxy.close());
        const clients = clientsFor(t);
        const { RecordingWebSocket, frames, sockets } = recordingWebSocket();
        const plain = await clients.connect(proxy.url(server.url), {
            WebSocket: RecordingWebSocket,
            extension: false,
            reconnect: true,
            reconnectDelay: 50,
            reconnectJitter: 0,
        });
        const room = await within(plain.join("plain-cut").joined(), "join_ack");
        const oldId = plain.id();
        const order = [];
        room.on("close", () => order.push("close"));
        room.on("open", () => order.push("open"));
        plain.on("resume_failed", () => order.push("resume_failed"));
        const reopened = next(room, "open", "the room open again");
        proxy.cut();
        await reopened;
        assert.deepEqual(order, ["close", "open"]);
        assert.notEqual(plain.id(), oldId);
        assert.equal(sockets.length, 2);
        assert.doesNotMatch(sockets[1].url, /resume=/);
        assert.deepEqual(frames.filter((frame) => frame.event.startsWith("trioroom.")), []);
    });
});
