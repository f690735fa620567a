/**
 * The trioroom.v1 extension in the client, against a fake WebSocket: the
 * test plays the server. See docs/protocol.md, "The trioroom.v1 extension".
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
    EXTENSION_PROTOCOL,
    ProtocolError,
    Reply,
    RequestError,
    resumeUrl,
    ServerError,
    TimeoutError,
    trioroom,
} from "../trioroom.js";
import { fakeWebSocketClass, nextEvent } from "./support/fake-websocket.js";

const A = "11111111-1111-4111-8111-111111111111";
const B = "22222222-2222-4222-8222-222222222222";
const C = "33333333-3333-4333-8333-333333333333";
const URL_ = "ws://127.0.0.1:1/ws?user=ann&x=a%20b";
const TOKEN = "tok_EN-0123456789abcdefghijklmnopq";
const fast = { reconnectDelay: 1, reconnectMaxDelay: 8, reconnectJitter: 0 };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function sessionFrame(token = TOKEN, id = A) {
    return { room: "root", event: "trioroom.session", payload: JSON.stringify({ token, resume_window: 30, id }) };
}

function joinAck(socket, room, id, members) {
    socket.deliver({ room, event: "join_ack", src: id, payload: JSON.stringify(members) });
}

/** Frames the client sent, without its acknowledgements. */
function appFrames(socket) {
    return socket.sent.filter((frame) => frame.event !== "trioroom.ack");
}

function acks(socket) {
    return socket.sent.filter((frame) => frame.event === "trioroom.ack").map((frame) => Buffer.from(frame.payload).toString());
}

/**
 * A client whose first socket the fake server accepts with the extension:
 * session, root join_ack, and (with `lobby`) an open lobby with member B.
 */
function connect(options = {}, { lobby = true } = {}) {
    const { FakeWebSocket, sockets, nextSocket } = fakeWebSocketClass();
    const root = trioroom(URL_, { WebSocket: FakeWebSocket, ackInterval: Infinity, ...fast, ...options });
    const socket = sockets[0];
    socket.accept(EXTENSION_PROTOCOL);
    socket.deliver(sessionFrame());
    joinAck(socket, "root", A, [A]);
    const result = { root, socket, sockets, nextSocket };
    if (lobby) {
        result.lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A, B]);
    }
    return result;
}

/** Drop `socket` and resolve with the client's next socket, not yet accepted. */
async function dropAndReconnect(socket, nextSocket, code = 1006) {
    const created = nextSocket();
    socket.drop(code);
    return created;
}

describe("negotiation", function () {
    test("the extension is on when the server selects trioroom.v1", function () {
        const { root, socket } = connect({}, { lobby: false });
        assert.deepEqual(socket.protocols, ["trioroom.v1"]);
        assert.equal(root.extended(), true);
        assert.equal(root.id(), A);
        assert.equal(root.open(), true);
        root.close();
    });

    test("a plain server (no subprotocol selected) gets the plain protocol: no acks, requests refused", async function () {
        const { FakeWebSocket, sockets } = fakeWebSocketClass();
        const root = trioroom(URL_, { WebSocket: FakeWebSocket, ackEvery: 2, ackInterval: 1 });
        const socket = sockets[0];
        socket.accept("");
        joinAck(socket, "root", A, [A]);
        assert.equal(root.extended(), false);
        for (let i = 0; i < 10; i += 1) {
            socket.deliver({ room: "root", event: "chat", src: B, payload: String(i) });
        }
        await sleep(10);
        assert.deepEqual(socket.sent, [], "nothing but what the app sends");
        const refused = await root.request("add", "[1]").catch((error) => error);
        assert.ok(refused instanceof RequestError);
        assert.equal(refused.code, "unsupported");
        root.close();
    });

    test("extension: false never treats the connection as extended", function () {
        const { FakeWebSocket, sockets } = fakeWebSocketClass();
        const root = trioroom(URL_, { WebSocket: FakeWebSocket, extension: false });
        assert.equal(sockets[0].protocols, undefined);
        sockets[0].accept("trioroom.v1");
        assert.equal(root.extended(), false);
        root.close();
    });
});

describe("numbering and acknowledgements", function () {
    test("counts numbered frames and acknowledges every ackEvery", function () {
        const { root, socket } = connect({ ackEvery: 4 });
        // Numbered so far: root join_ack, lobby join_ack.
        socket.deliver({ room: "lobby", event: "chat", src: B, payload: "1" });
        assert.deepEqual(acks(socket), []);
        socket.deliver({ room: "lobby", event: "chat", src: B, payload: "2" });
        assert.deepEqual(acks(socket), ["4"]);
        const ack = socket.sent.find((frame) => frame.event === "trioroom.ack");
        assert.deepEqual([ack.room, ack.dst, ack.src], ["root", "", ""]);
        // Frames for unknown rooms, replies, errors and malformed frames are numbered too.
        socket.deliver({ room: "elsewhere", event: "chat", src: B });
        socket.deliver({ room: "root", event: "trioroom.error", payload: '{"code":"rate_limited","message":"m","event":""}' });
        socket.deliver({ room: "root", event: "trioroom.reply", dst: "?99" });
        socket.deliverRaw(new Uint8Array([1, 2, 3]).buffer);
        assert.deepEqual(acks(socket), ["4", "8"]);
        root.close();
    });

    test("trioroom.session, resumed and not_resumed from the server are not numbered; a peer's fakes are", function () {
        const { root, socket } = connect({ ackEvery: 3 }, { lobby: false });
        const errors = [];
        root.on("error", (error) => errors.push(error));
        // 1 numbered frame so far (root join_ack).
        socket.deliver({ room: "root", event: "trioroom.resumed", payload: '{"id":"x","replayed":0}' });
        socket.deliver({ room: "root", event: "trioroom.not_resumed", payload: '{"reason":"expired"}' });
        assert.deepEqual(acks(socket), []);
        assert.equal(errors.length, 2, "unexpected at this point");
        // A peer broadcasts the same names: the server numbered those frames, and they are refused.
        socket.deliver({ room: "root", event: "trioroom.resumed", src: B, payload: "{}" });
        socket.deliver({ room: "root", event: "trioroom.session", src: B, payload: "{}" });
        assert.deepEqual(acks(socket), ["3"]);
        assert.equal(errors.length, 4);
        assert.ok(errors.every((error) => error instanceof ProtocolError));
        assert.equal(root.id(), A, "the fake session changed nothing");
        root.close();
    });

    test("a peer cannot fake a reply or an error", async function () {
        const { root, socket, lobby } = connect();
        const errors = [];
        root.on("error", (error) => errors.push(error));
        const answer = lobby.request("add", "[1]");
        socket.deliver({ room: "lobby", event: "trioroom.reply", dst: "?1", src: B, payload: "forged" });
        socket.deliver({ room: "lobby", event: "trioroom.error", src: B, payload: '{"code":"x","message":"forged"}' });
        assert.equal(errors.length, 2);
        assert.ok(errors.every((error) => error instanceof ProtocolError));
        socket.deliver({ room: "lobby", event: "trioroom.reply", dst: "?1", payload: "real" });
        assert.equal((await answer).text(), "real");
        root.close();
    });

    test("acknowledges on a timer, only when there is something new", async function () {
        const { root, socket } = connect({ ackInterval: 5 });
        socket.deliver({ room: "lobby", event: "chat", src: B });
        await sleep(40);
        assert.deepEqual(acks(socket), ["3"]);
        socket.deliver({ room: "lobby", event: "chat", src: B });
        await sleep(40);
        assert.deepEqual(acks(socket), ["3", "4"]);
        root.close();
        const count = socket.sent.length;
        await sleep(20);
        assert.equal(socket.sent.length, count, "the timer stops with the client");
    });

    test("the timer does not ack without a session (resume window 0 on the server)", async function () {
        const { FakeWebSocket, sockets } = fakeWebSocketClass();
        const root = trioroom(URL_, { WebSocket: FakeWebSocket, ackEvery: 1, ackInterval: 2 });
        sockets[0].accept(EXTENSION_PROTOCOL);
        joinAck(sockets[0], "root", A, [A]);
        sockets[0].deliver({ room: "root", event: "chat", src: B });
        await sleep(20);
        assert.equal(root.extended(), true);
        assert.deepEqual(sockets[0].sent, []);
        root.close();
    });
});

describe("resumption", function () {
    test("a dropped socket resumes: same ID, rooms and members, no close/open, no rejoin", async function () {
        const { root, socket, lobby, nextSocket } = connect();
        socket.deliver({ room: "lobby", event: "chat", src: B, payload: "before" });
        const events = [];
        for (const name of ["open", "close", "reconnecting", "resumed", "resume_failed"]) {
            root.on(name, (...args) => events.push(["root " + name, ...args]));
            lobby.on(name, () => events.push(["lobby " + name]));
        }
        const chats = [];
        lobby.on("chat", (payload) => chats.push(Buffer.from(payload).toString()));

        const fresh = await dropAndReconnect(socket, nextSocket);
        assert.equal(root.open(), false);
        assert.equal(lobby.open(), false);
        assert.throws(() => lobby.send("chat", "x"), /not open/);
        assert.deepEqual(lobby.members(), [A, B], "kept while suspended");
        assert.equal(lobby.id(), A);
        const ready = root.ready();
        const joined = lobby.joined();
        // 3 numbered frames: root join_ack, lobby join_ack, chat. Other query parameters are kept.
        assert.equal(fresh.url, "ws://127.0.0.1:1/ws?user=ann&x=a%20b&resume=" + TOKEN + "&last=3");
        assert.deepEqual(fresh.protocols, ["trioroom.v1"]);

        fresh.accept(EXTENSION_PROTOCOL);
        assert.equal(lobby.open(), false, "not before the server said resumed");
        fresh.deliver({ room: "root", event: "trioroom.resumed", payload: JSON.stringify({ id: A, replayed: 2 }) });
        fresh.deliver({ room: "lobby", event: "chat", src: B, payload: "replayed 1" });
        fresh.deliver({ room: "lobby", event: "member_left", payload: B });
        assert.equal(await ready, root);
        assert.equal(await joined, lobby);
        assert.deepEqual(events, [["root reconnecting", 1, 1], ["root resumed", 2]]);
        assert.deepEqual(chats, ["replayed 1"]);
        assert.deepEqual(lobby.members(), [A], "replayed member changes apply");
        assert.equal(root.id(), A);
        assert.equal(lobby.open(), true);
        assert.deepEqual(appFrames(fresh), [], "no join: the server kept the memberships");
        lobby.send("chat", "after");
        assert.deepEqual([fresh.sent.at(-1).src, fresh.sent.at(-1).room], [A, "lobby"]);

        // The count goes on across sockets: 3 + 2 replayed.
        const third = await dropAndReconnect(fresh, nextSocket);
        assert.match(third.url, /&resume=tok_EN-0123456789abcdefghijklmnopq&last=5$/);
        root.close();
    });

    test("a resume after a heartbeat close (1011) too, but not after a close on purpose", async function () {
        // With reconnectAfterKick, kicks and policy closes reconnect too (by default they end the client).
        const { root, socket, sockets, nextSocket } = connect({ reconnectAfterKick: true });
        const fresh = await dropAndReconnect(socket, nextSocket, 1011);
        assert.match(fresh.url, /resume=/);
        fresh.accept(EXTENSION_PROTOCOL);
        fresh.deliver({ room: "root", event: "trioroom.resumed", payload: JSON.stringify({ id: A, replayed: 0 }) });
        const closed = [];
        root.on("close", () => closed.push("root"));
        for (const code of [1000, 1001, 1008, 1009, 4000]) {
            const next = await dropAndReconnect(sockets.at(-1), nextSocket, code);
            assert.equal(next.url, URL_, "close code " + code + " ends the session: a fresh connection");
            next.accept(EXTENSION_PROTOCOL);
            next.deliver(sessionFrame("t" + code, C));
            joinAck(next, "root", C, [C]);
        }
        assert.equal(closed.length, 5);
        root.close();
    });

    test("a kick or policy close ends the client by default: close says why, no reconnect", async function () {
        for (const code of [4000, 1008, 1009]) {
            const { root, socket, sockets, lobby } = connect();
            const closes = [];
            root.on("close", (info) => closes.push(["root", info]));
            lobby.on("close", (info) => closes.push(["lobby", info]));
            const states = [];
            root.on("state", (state, previous) => states.push([previous, state]));
            socket.dispatch("close", { type: "close", code, reason: "bye " + code });
            const info = { code, reason: "bye " + code, willReconnect: false };
            assert.deepEqual(closes, [["lobby", info], ["root", info]]);
            assert.deepEqual(states, [["open", "closed"]]);
            assert.equal(root.state, "closed");
            await assert.rejects(root.ready(), new RegExp("closed the connection with " + code));
            await sleep(20);
            assert.equal(sockets.length, 1, "close code " + code + ": no reconnect");
        }
    });

    test("a leave or join made while suspended goes out on resume; joins in flight are sent again", async function () {
        const { root, socket, lobby, nextSocket } = connect();
        const pending = root.join("pending");
        assert.deepEqual(socket.sent.at(-1), { room: "pending", event: "join", dst: "", src: "", payload: new Uint8Array(0) });
        const fresh = await dropAndReconnect(socket, nextSocket);
        lobby.leave();
        assert.equal(root.rooms().lobby, lobby, "still a member until the server confirms");
        const later = root.join("later");
        fresh.accept(EXTENSION_PROTOCOL);
        fresh.deliver({ room: "root", event: "trioroom.resumed", payload: JSON.stringify({ id: A, replayed: 0 }) });
        assert.deepEqual(
            appFrames(fresh).map((frame) => [frame.room, frame.event]),
            [["lobby", "leave"], ["pending", "join"], ["later", "join"]],
        );
        const lobbyClosed = nextEvent(lobby, "close");
        fresh.deliver({ room: "lobby", event: "leave_ack", src: A, payload: A });
        await lobbyClosed;
        joinAck(fresh, "pending", A, [A]);
        joinAck(fresh, "pending", A, [A]);
        joinAck(fresh, "later", A, [A]);
        assert.equal(pending.open(), true);
        assert.equal(later.open(), true);
        root.close();
    });

    test("not_resumed: resume_failed with the reason, rooms close, fresh session, rooms joined again", async function () {
        const { root, socket, lobby, nextSocket } = connect();
        const answer = lobby.request("slow", "");
        const order = [];
        root.on("resume_failed", (reason) => order.push("resume_failed " + reason));
        lobby.on("close", () => order.push("lobby close"));
        root.on("close", () => order.push("root close"));
        root.on("open", () => order.push("root open"));
        lobby.on("open", () => order.push("lobby open"));
        const fresh = await dropAndReconnect(socket, nextSocket);
        assert.deepEqual(order, []);
        fresh.accept(EXTENSION_PROTOCOL);
        fresh.deliver({ room: "root", event: "trioroom.not_resumed", payload: '{"reason":"expired"}' });
        assert.deepEqual(order, ["resume_failed expired", "lobby close", "root close"]);
        const failed = await answer.catch((error) => error);
        assert.ok(failed instanceof RequestError);
        assert.equal(failed.code, "disconnected");
        fresh.deliver(sessionFrame("new-token", C));
        joinAck(fresh, "root", C, [C]);
        assert.deepEqual(appFrames(fresh).map((frame) => [frame.room, frame.event]), [["lobby", "join"]]);
        joinAck(fresh, "lobby", C, [B, C]);
        assert.deepEqual(order.slice(3), ["root open", "lobby open"]);
        assert.equal(lobby.id(), C);
        // The next resume uses the new session, counted from its start.
        const third = await dropAndReconnect(fresh, nextSocket);
        assert.match(third.url, /resume=new-token&last=2$/);
        root.close();
    });

    test("a resume that reaches a server without the extension is a fresh plain connection", async function () {
        const { root, socket, lobby, nextSocket } = connect();
        const reasons = [];
        root.on("resume_failed", (reason) => reasons.push(reason));
        const fresh = await dropAndReconnect(socket, nextSocket);
        fresh.accept("");
        assert.deepEqual(reasons, ["unsupported"]);
        assert.equal(lobby.open(), false);
        joinAck(fresh, "root", C, [C]);
        assert.deepEqual(appFrames(fresh).map((frame) => frame.event), ["join"]);
        assert.equal(root.extended(), false);
        // No session now: the next drop reconnects plainly.
        const third = await dropAndReconnect(fresh, nextSocket);
        assert.equal(third.url, URL_);
        root.close();
    });

    test("failed resume attempts keep the session until the server answers", async function () {
        const { root, socket, lobby, nextSocket } = connect();
        let fresh = await dropAndReconnect(socket, nextSocket);
        for (let i = 0; i < 3; i += 1) {
            // The server is unreachable: the socket fails without opening.
            fresh = await dropAndReconnect(fresh, nextSocket);
            assert.match(fresh.url, /resume=.*&last=2$/);
        }
        assert.deepEqual(lobby.members(), [A, B]);
        fresh.accept(EXTENSION_PROTOCOL);
        fresh.deliver({ room: "root", event: "trioroom.resumed", payload: JSON.stringify({ id: A, replayed: 0 }) });
        assert.equal(lobby.open(), true);
        root.close();
    });

    test("close() while suspended closes the rooms and stops for good", async function () {
        const { root, socket, lobby, sockets } = connect({ reconnectDelay: 5 });
        const answer = lobby.request("x");
        const closed = [];
        lobby.on("close", () => closed.push("lobby"));
        root.on("close", () => closed.push("root"));
        socket.drop();
        assert.deepEqual(closed, []);
        root.close();
        assert.deepEqual(closed, ["lobby", "root"]);
        assert.equal((await answer.catch((error) => error)).code, "closed");
        await sleep(30);
        assert.equal(sockets.length, 1);
    });

    test("reconnect: false ends the session with the socket", async function () {
        const { root, socket, lobby } = connect({ reconnect: false });
        const closed = nextEvent(lobby, "close");
        socket.drop();
        await closed;
        await assert.rejects(root.ready(), /reconnect is off/);
    });
});

describe("requests", function () {
    test("resolve with the reply's payload, with text() and json()", async function () {
        const { root, socket, lobby } = connect();
        const answer = lobby.request("add", "[1,2,3]");
        const sent = socket.sent.at(-1);
        assert.deepEqual([sent.room, sent.event, sent.dst, sent.src], ["lobby", "add", "", "?1"]);
        assert.equal(Buffer.from(sent.payload).toString(), "[1,2,3]");
        socket.deliver({ room: "lobby", event: "trioroom.reply", dst: "?1", payload: '{"sum":6}' });
        const reply = await answer;
        assert.ok(reply instanceof Reply && reply instanceof Uint8Array);
        assert.deepEqual(reply.json(), { sum: 6 });
        assert.equal(reply.text(), '{"sum":6}');

        const bytes = root.request("echo", new Uint8Array([0, 255]), { dst: B });
        assert.deepEqual([socket.sent.at(-1).room, socket.sent.at(-1).dst, socket.sent.at(-1).src], ["root", B, "?2"]);
        socket.deliver({ room: "root", event: "trioroom.reply", dst: "?2", payload: new Uint8Array([0, 255]) });
        assert.deepEqual([...(await bytes)], [0, 255]);
        root.close();
    });

    test("answers are matched by ref, in any order", async function () {
        const { root, socket } = connect({}, { lobby: false });
        const first = root.request("a");
        const second = root.request("b");
        socket.deliver({ room: "root", event: "trioroom.reply", dst: "?2", payload: "second" });
        socket.deliver({ room: "root", event: "trioroom.reply", dst: "?1", payload: "first" });
        assert.deepEqual([(await first).text(), (await second).text()], ["first", "second"]);
        root.close();
    });

    test("reject with the server's error: code, message, event", async function () {
        const { root, socket, lobby } = connect();
        const errors = [];
        root.on("error", (error) => errors.push(error));
        const answer = lobby.request("add", "[]");
        socket.deliver({
            room: "lobby",
            event: "trioroom.error",
            dst: "?1",
            payload: JSON.stringify({ code: "empty", message: "nothing to add", event: "add" }),
        });
        const error = await answer.catch((reason) => reason);
        assert.ok(error instanceof ServerError);
        assert.deepEqual([error.code, error.message, error.event, error.room], ["empty", "nothing to add", "add", "lobby"]);
        assert.deepEqual(errors, [], "a request's error is not also an error event");
        root.close();
    });

    test("time out on the client side with code timeout; a late answer is ignored", async function () {
        const { root, socket, lobby } = connect({ requestTimeout: 5 });
        const errors = [];
        root.on("error", (error) => errors.push(error));
        const error = await lobby.request("slow").catch((reason) => reason);
        assert.ok(error instanceof TimeoutError);
        assert.equal(error.code, "timeout");
        assert.equal(error.event, "slow");
        const own = await lobby.request("slow", "", { timeout: 1 }).catch((reason) => reason);
        assert.equal(own.code, "timeout");
        socket.deliver({ room: "lobby", event: "trioroom.reply", dst: "?1" });
        socket.deliver({ room: "lobby", event: "trioroom.error", dst: "?2", payload: '{"code":"timeout","message":"m"}' });
        assert.deepEqual(errors, []);
        root.close();
    });

    test("refused without sending: bad arguments, reserved names, a room that is not open", async function () {
        const { root, socket } = connect({}, { lobby: false });
        const count = socket.sent.length;
        await assert.rejects(root.request(5), TypeError);
        await assert.rejects(root.request("join"), /reserved/);
        await assert.rejects(root.request("trioroom.ack", "1"), /reserved/);
        await assert.rejects(root.request("x", 5), TypeError);
        await assert.rejects(root.request("x", "", { timeout: -1 }), RangeError);
        await assert.rejects(root.request("x", "", "soon"), TypeError);
        const notOpen = await root.join("pending").request("x").catch((error) => error);
        assert.ok(notOpen instanceof RequestError);
        assert.equal(notOpen.code, "not_open");
        assert.equal(socket.sent.length, count + 1, "only the join");
        root.close();
    });

    test("a request survives a resume and gets its answer from the replay", async function () {
        const { root, socket, lobby, nextSocket } = connect();
        const answer = lobby.request("add", "[2]", { timeout: 1000 });
        const fresh = await dropAndReconnect(socket, nextSocket);
        fresh.accept(EXTENSION_PROTOCOL);
        fresh.deliver({ room: "root", event: "trioroom.resumed", payload: JSON.stringify({ id: A, replayed: 1 }) });
        fresh.deliver({ room: "lobby", event: "trioroom.reply", dst: "?1", payload: "2" });
        assert.equal((await answer).json(), 2);
        root.close();
    });

    test("after a resume a probe goes out; requests the server never got go again, once, before the offline queue", async function () {
        const { root, socket, lobby, nextSocket } = connect({ offlineQueue: true });
        const lost = lobby.request("add", "[1]", { timeout: 5000 });
        const answered = lobby.request("add", "[2]", { timeout: 5000 });
        const fresh = await dropAndReconnect(socket, nextSocket);
        lobby.send("chat", "queued 1");
        const queued = lobby.request("add", "[3]", { timeout: 5000 });
        lobby.send("chat", "queued 2");
        fresh.accept(EXTENSION_PROTOCOL);
        fresh.deliver({ room: "root", event: "trioroom.resumed", payload: JSON.stringify({ id: A, replayed: 1 }) });
        // The replay answers ?2; the probe is ?4 (a leave of the room "", which nobody is in).
        fresh.deliver({ room: "lobby", event: "trioroom.reply", dst: "?2", payload: "2" });
        assert.deepEqual(appFrames(fresh).map((frame) => [frame.room, frame.event, frame.src]), [["", "leave", "?4"]]);
        lobby.send("chat", "after the resume");
        assert.equal(appFrames(fresh).length, 1, "later calls wait behind the queue");
        fresh.deliver({ room: "", event: "trioroom.error", dst: "?4", payload: '{"code":"not_a_member","message":"m","event":"leave"}' });
        assert.deepEqual(
            appFrames(fresh).slice(1).map((frame) => [frame.event, frame.src === "" || frame.src === A ? "" : frame.src, Buffer.from(frame.payload).toString()]),
            [
                ["add", "?1", "[1]"],
                ["chat", "", "queued 1"],
                ["add", "?3", "[3]"],
                ["chat", "", "queued 2"],
                ["chat", "", "after the resume"],
            ],
        );
        fresh.deliver({ room: "lobby", event: "trioroom.reply", dst: "?1", payload: "1" });
        fresh.deliver({ room: "lobby", event: "trioroom.reply", dst: "?3", payload: "3" });
        assert.deepEqual([(await lost).json(), (await answered).json(), (await queued).json()], [1, 2, 3]);
        // Another cut: nothing in flight, so no probe.
        const third = await dropAndReconnect(fresh, nextSocket);
        third.accept(EXTENSION_PROTOCOL);
        third.deliver({ room: "root", event: "trioroom.resumed", payload: JSON.stringify({ id: A, replayed: 0 }) });
        assert.deepEqual(appFrames(third), []);
        root.close();
    });
});

describe("errors from the server", function () {
    test("an error without a ref is an error event on its room, else the root", function () {
        const { root, socket, lobby } = connect();
        const seen = [];
        root.on("error", (error) => seen.push(["root", error.code, error.message]));
        lobby.on("error", (error) => seen.push(["lobby", error.code, error.event]));
        socket.deliver({ room: "root", event: "trioroom.error", payload: '{"code":"rate_limited","message":"rate limit exceeded","event":""}' });
        socket.deliver({ room: "lobby", event: "trioroom.error", payload: '{"code":"not_a_member","message":"m","event":"chat"}' });
        socket.deliver({ room: "nowhere", event: "trioroom.error", payload: '{"code":"not_a_member","message":"gone","event":"chat"}' });
        socket.deliver({ room: "root", event: "trioroom.error", payload: "not json" });
        assert.deepEqual(seen, [
            ["root", "rate_limited", "rate limit exceeded"],
            ["lobby", "not_a_member", "chat"],
            ["root", "not_a_member", "gone"],
            ["root", "unknown", "the server reported unknown"],
        ]);
        root.close();
    });

    test("join_refused rejects joined() and forgets the room", async function () {
        const { root, socket } = connect({}, { lobby: false });
        const vip = root.join("vip");
        const joined = vip.joined();
        const errors = [];
        vip.on("error", (error) => errors.push(error.code));
        socket.deliver({
            room: "vip",
            event: "trioroom.error",
            payload: JSON.stringify({ code: "join_refused", message: "refused by authorize_join", event: "join" }),
        });
        const error = await joined.catch((reason) => reason);
        assert.ok(error instanceof ServerError);
        assert.deepEqual([error.code, error.room, error.event], ["join_refused", "vip", "join"]);
        assert.deepEqual(errors, ["join_refused"]);
        assert.equal(root.rooms().vip, undefined);
        assert.notEqual(root.join("vip"), vip, "a new try is a new room object");
        root.close();
    });
});

describe("resumeUrl", function () {
    test("adds resume and last, keeps every other parameter as it was", function () {
        assert.equal(resumeUrl("ws://h/ws", "t", 0), "ws://h/ws?resume=t&last=0");
        assert.equal(resumeUrl("ws://h/ws?", "t", 1), "ws://h/ws?resume=t&last=1");
        assert.equal(resumeUrl("ws://h/ws?a=1&b=%2F+x", "t", 2), "ws://h/ws?a=1&b=%2F+x&resume=t&last=2");
        assert.equal(resumeUrl("ws://h/ws?resume=old&a=1&last=9", "t", 3), "ws://h/ws?a=1&resume=t&last=3");
        assert.equal(resumeUrl("ws://h/ws?a#frag", "t/+", 4), "ws://h/ws?a&resume=t%2F%2B&last=4");
        assert.equal(resumeUrl("ws://h/ws?lastname=x", "t", 5), "ws://h/ws?lastname=x&resume=t&last=5");
    });
});
