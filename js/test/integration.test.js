/**
 * The client against the real Python server (see support/server.js).
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WebSocket } from "ws";

import { decodeFrame, encodeFrame } from "../codec.js";
import { json, text, trioroom } from "../trioroom.js";
import { startServer } from "./support/server.js";
import { next, until, within } from "./support/wait.js";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const TEST_TIMEOUT_MS = 60000;

/** Clients opened by a test, closed when it ends. */
function clientsFor(t, url) {
    const opened = [];
    t.after(() => opened.forEach((close) => close()));
    return {
        async connect(options = {}) {
            const root = trioroom(url, { WebSocket, reconnect: false, ...options });
            opened.push(() => root.close());
            await within(root.ready(), "the root join_ack");
            return root;
        },
        async raw() {
            const peer = await rawPeer(url);
            opened.push(() => peer.socket.close());
            return peer;
        },
    };
}

async function joinAll(roomName, ...roots) {
    const rooms = [];
    for (const root of roots) {
        const room = root.join(roomName);
        await within(room.joined(), "join_ack of " + roomName);
        rooms.push(room);
    }
    // Everyone has seen everyone once the last joiner's new_member reached the others.
    const ids = roots.map((root) => root.id());
    for (const room of rooms) {
        await until(room, "new_member", () => ids.every((id) => room.members().includes(id)), "full member list of " + roomName);
    }
    return rooms;
}

/**
 * A connection speaking the wire format directly, to send what our client
 * never would (a spoofed src) and to check that every frame is binary.
 */
async function rawPeer(url) {
    const socket = new WebSocket(url);
    const frames = [];
    const waiters = [];
    const textFrames = [];
    socket.on("message", function (data, isBinary) {
        if (!isBinary) {
            textFrames.push(data.toString());
        }
        const frame = decodeFrame(data);
        frames.push(frame);
        waiters.slice().forEach((waiter) => waiter());
    });
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
    await within(new Promise((resolve, reject) => {
        socket.once("open", resolve);
        socket.once("error", reject);
    }), "raw socket open");
    const welcome = await nextFrame(() => true, "the raw peer's first frame");
    return {
        socket,
        welcome,
        id: welcome.src,
        textFrames,
        nextFrame,
        send(frame) {
            socket.send(encodeFrame(frame));
        },
    };
}

describe("against the Python server", { timeout: TEST_TIMEOUT_MS * 4 }, function () {
    let server;

    before(async function () {
        server = await startServer();
    });

    after(async function () {
        await server?.stop();
    });

    test("the first frame is the root join_ack with a v4 UUID and a member list with self", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const clients = clientsFor(t, server.url);
        const raw = await clients.raw();
        assert.deepEqual([raw.welcome.room, raw.welcome.event, raw.welcome.dst], ["root", "join_ack", ""]);
        assert.match(raw.id, UUID_V4);
        assert.ok(json(raw.welcome.payload).includes(raw.id));
        assert.deepEqual(raw.textFrames, [], "the server sends binary frames only");

        const root = await clients.connect();
        assert.match(root.id(), UUID_V4);
        assert.notEqual(root.id(), raw.id);
        assert.ok(root.members().includes(root.id()));
        assert.equal(root.open(), true);
        const seen = await raw.nextFrame((frame) => frame.event === "new_member", "new_member in root");
        assert.deepEqual([seen.room, seen.src, text(seen.payload)], ["root", "", root.id()]);
    });

    test("join and leave keep member lists right on every side", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const clients = clientsFor(t, server.url);
        const alice = await clients.connect();
        const bob = await clients.connect();

        const aliceLobby = alice.join("lobby-members");
        await within(aliceLobby.joined(), "alice's join_ack");
        assert.deepEqual(aliceLobby.members(), [alice.id()]);
        assert.equal(aliceLobby.id(), alice.id());

        const newMember = next(aliceLobby, "new_member");
        const bobLobby = bob.join("lobby-members");
        await within(bobLobby.joined(), "bob's join_ack");
        assert.deepEqual([...bobLobby.members()].sort(), [alice.id(), bob.id()].sort());
        assert.deepEqual(await newMember, [bob.id()]);
        assert.deepEqual(aliceLobby.members(), [alice.id(), bob.id()]);

        const memberLeft = next(aliceLobby, "member_left");
        const bobClosed = next(bobLobby, "close", "bob's leave_ack");
        bobLobby.leave();
        await bobClosed;
        assert.equal(bobLobby.open(), false);
        assert.equal(bob.rooms()["lobby-members"], undefined);
        assert.deepEqual(await memberLeft, [bob.id()]);
        assert.deepEqual(aliceLobby.members(), [alice.id()]);
        assert.equal(bob.open(), true, "leaving a room keeps the connection");
    });

    test("a broadcast reaches every other member with src set, never the sender", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const clients = clientsFor(t, server.url);
        const [alice, bob, carol] = [await clients.connect(), await clients.connect(), await clients.connect()];
        const [aliceRoom, bobRoom, carolRoom] = await joinAll("broadcast", alice, bob, carol);

        const echoes = [];
        aliceRoom.on("chat", (payload) => echoes.push(text(payload)));
        const bobGot = next(bobRoom, "chat", "bob's chat");
        const carolGot = next(carolRoom, "chat", "carol's chat");
        aliceRoom.send("chat", "hello room");
        for (const [payload, sender] of [await bobGot, await carolGot]) {
            assert.equal(text(payload), "hello room");
            assert.equal(sender, alice.id());
        }
        // Frames to one connection keep their order, so had alice got her own
        // chat, it would be there before bob's reply.
        const reply = next(aliceRoom, "reply", "bob's reply");
        bobRoom.send("reply", "ok");
        assert.equal((await reply)[1], bob.id());
        assert.deepEqual(echoes, []);
    });

    test("a direct message reaches only dst, with src set to the real sender", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const clients = clientsFor(t, server.url);
        const [alice, bob, carol] = [await clients.connect(), await clients.connect(), await clients.connect()];
        const [aliceRoom, bobRoom, carolRoom] = await joinAll("direct", alice, bob, carol);

        const overheard = [];
        carolRoom.on("whisper", (payload) => overheard.push(text(payload)));
        aliceRoom.on("whisper", (payload) => overheard.push(text(payload)));
        const bobGot = next(bobRoom, "whisper", "bob's whisper");
        aliceRoom.send("whisper", "for bob only", bob.id());
        const [payload, sender, frame] = await bobGot;
        assert.deepEqual([text(payload), sender, frame.dst, frame.room], ["for bob only", alice.id(), bob.id(), "direct"]);

        // A peer that lies about src: the server must put the real ID there.
        const mallory = await clients.raw();
        // A direct message's room must be root or one the sender is in.
        mallory.send({ room: "direct", event: "join", dst: "", src: "", payload: "" });
        await mallory.nextFrame((frame) => frame.room === "direct" && frame.event === "join_ack", "mallory's join_ack");
        const spoofed = next(bobRoom, "whisper", "the spoofed whisper");
        mallory.send({ room: "direct", event: "whisper", dst: bob.id(), src: alice.id(), payload: "from mallory" });
        const [spoofPayload, spoofSender] = await spoofed;
        assert.equal(text(spoofPayload), "from mallory");
        assert.equal(spoofSender, mallory.id);

        // carol and alice would have had the whisper before these markers.
        const carolMarker = next(carolRoom, "marker", "marker to carol");
        const aliceMarker = next(aliceRoom, "marker", "marker to alice");
        bobRoom.send("marker", "", carol.id());
        bobRoom.send("marker", "", alice.id());
        await carolMarker;
        await aliceMarker;
        assert.deepEqual(overheard, []);
    });

    test("non-ASCII names and payloads, and binary payloads, arrive intact", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const clients = clientsFor(t, server.url);
        const [alice, bob] = [await clients.connect(), await clients.connect()];
        const [aliceRoom, bobRoom] = await joinAll("café-☕ 日本", alice, bob);
        assert.equal(bobRoom.name, "café-☕ 日本");

        const greeting = next(bobRoom, "grüße", "the non-ASCII event");
        aliceRoom.send("grüße", "héllo 🌍 Ελληνικά");
        assert.equal(text((await greeting)[0]), "héllo 🌍 Ελληνικά");

        const allBytes = new Uint8Array(256).map((_, index) => index);
        const binary = next(bobRoom, "bytes", "the binary payload");
        aliceRoom.send("bytes", new DataView(allBytes.buffer));
        assert.deepEqual((await binary)[0], allBytes);

        const structured = next(bobRoom, "json", "the JSON payload");
        aliceRoom.send("json", JSON.stringify({ emoji: "🎉", n: [1, 2] }));
        assert.deepEqual(json((await structured)[0]), { emoji: "🎉", n: [1, 2] });
    });

    test("a client that disconnects leaves every room it was in", { timeout: TEST_TIMEOUT_MS }, async function (t) {
        const clients = clientsFor(t, server.url);
        const [alice, bob] = [await clients.connect(), await clients.connect()];
        const [aliceRoom] = await joinAll("disconnect", alice, bob);
        const bobId = bob.id();
        const leftRoom = next(aliceRoom, "member_left", "member_left in the room");
        const leftRoot = until(alice, "member_left", () => !alice.members().includes(bobId), "member_left in root");
        const bobClosed = next(bob, "close", "bob's own close event");
        bob.close();
        await bobClosed;
        assert.equal(bob.open(), false);
        assert.deepEqual(await leftRoom, [bobId]);
        await leftRoot;
        assert.deepEqual(aliceRoom.members(), [alice.id()]);
    });
});

describe("reconnecting", { timeout: TEST_TIMEOUT_MS * 2 }, function () {
    test("after a server restart the client gets a new ID, rejoins its rooms and messages flow", { timeout: TEST_TIMEOUT_MS * 2 }, async function (t) {
        let server = await startServer();
        t.after(() => server.stop());
        const options = { WebSocket, reconnect: true, reconnectDelay: 50, reconnectMaxDelay: 400, reconnectJitter: 0.3 };
        const alice = trioroom(server.url, options);
        const bob = trioroom(server.url, options);
        t.after(() => {
            alice.close();
            bob.close();
        });
        await within(Promise.all([alice.ready(), bob.ready()]), "both roots");
        const [aliceRoom, bobRoom] = await joinAll("reconnect", alice, bob);
        const oldIds = [alice.id(), bob.id()];

        const closed = Promise.all([next(alice, "close"), next(aliceRoom, "close"), next(bob, "close"), next(bobRoom, "close")]);
        const reconnecting = next(alice, "reconnecting", "alice's reconnecting event");
        const reopened = Promise.all([next(aliceRoom, "open", "alice's room open again", 45000), next(bobRoom, "open", "bob's room open again", 45000)]);
        const port = server.port;
        await server.stop();
        await within(closed, "close events after the server stopped");
        assert.equal(alice.open(), false);
        assert.equal(aliceRoom.open(), false);
        const [attempt, delay] = await reconnecting;
        assert.equal(attempt, 1);
        assert.ok(delay >= 0 && delay <= 50, String(delay));

        server = await startServer({ port });
        await reopened;
        assert.match(alice.id(), UUID_V4);
        assert.notEqual(alice.id(), oldIds[0], "a new ID after reconnecting");
        assert.notEqual(bob.id(), oldIds[1]);
        assert.equal(aliceRoom.id(), alice.id());
        await until(aliceRoom, "new_member", () => aliceRoom.members().includes(bob.id()), "bob back in alice's member list");
        assert.ok(!aliceRoom.members().includes(oldIds[1]), "no stale IDs");

        const got = next(bobRoom, "chat", "chat after reconnecting");
        aliceRoom.send("chat", "we are back");
        const [payload, sender] = await got;
        assert.equal(text(payload), "we are back");
        assert.equal(sender, alice.id());
    });
});
