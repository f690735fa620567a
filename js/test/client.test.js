import assert from "node:assert/strict";
import { describe, test } from "node:test";

import defaultExport, {
    FrameError,
    json,
    LOCAL_EVENTS,
    ProtocolError,
    REFUSED_EVENTS,
    RESERVED_EVENTS,
    text,
    TimeoutError,
    trioroom,
} from "../trioroom.js";
import { fakeWebSocketClass, nextEvent } from "./support/fake-websocket.js";

const A = "11111111-1111-4111-8111-111111111111";
const B = "22222222-2222-4222-8222-222222222222";
const C = "33333333-3333-4333-8333-333333333333";
const URL_ = "ws://127.0.0.1:1/ws";

function memberList(ids) {
    return JSON.stringify(ids);
}

/** A client whose first socket is accepted; the root is open once `welcome` ran. */
function connect(options = {}) {
    const { FakeWebSocket, sockets, nextSocket } = fakeWebSocketClass();
    const root = trioroom(URL_, { WebSocket: FakeWebSocket, ...options });
    const socket = sockets[0];
    socket.accept();
    function welcome(id = A, members = [id], on = socket) {
        on.deliver({ room: "root", event: "join_ack", src: id, payload: memberList(members) });
    }
    return { root, socket, sockets, welcome, nextSocket };
}

function joinAck(socket, room, id, members) {
    socket.deliver({ room, event: "join_ack", src: id, payload: memberList(members) });
}

describe("creating a client", function () {
    test("the default export is the factory", function () {
        assert.equal(defaultExport, trioroom);
    });

    test("opens one socket to the URL, with binaryType arraybuffer", function () {
        const { FakeWebSocket, sockets } = fakeWebSocketClass();
        const root = trioroom(new URL(URL_), { WebSocket: FakeWebSocket });
        assert.equal(sockets.length, 1);
        assert.equal(sockets[0].url, URL_);
        assert.equal(sockets[0].binaryType, "arraybuffer");
        assert.deepEqual(sockets[0].protocols, ["trioroom.v1"], "the extension is offered by default");
        assert.equal(root.name, "root");
        assert.equal(root.open(), false);
        assert.equal(root.id(), "");
        root.close();
    });

    test("passes subprotocols on, adding the extension's unless it is off", function () {
        const { FakeWebSocket, sockets } = fakeWebSocketClass();
        trioroom(URL_, { WebSocket: FakeWebSocket, protocols: ["x.v1"] }).close();
        assert.deepEqual(sockets[0].protocols, ["x.v1", "trioroom.v1"]);
        trioroom(URL_, { WebSocket: FakeWebSocket, protocols: "x.v1" }).close();
        assert.deepEqual(sockets[1].protocols, ["x.v1", "trioroom.v1"]);
        trioroom(URL_, { WebSocket: FakeWebSocket, protocols: ["trioroom.v1"] }).close();
        assert.deepEqual(sockets[2].protocols, ["trioroom.v1"]);
        trioroom(URL_, { WebSocket: FakeWebSocket, protocols: ["x.v1"], extension: false }).close();
        assert.deepEqual(sockets[3].protocols, ["x.v1"]);
        trioroom(URL_, { WebSocket: FakeWebSocket, extension: false }).close();
        assert.equal(sockets[4].protocols, undefined, "exactly the plain client's handshake");
        assert.throws(() => trioroom(URL_, { WebSocket: FakeWebSocket, protocols: ["trioroom.v1"], extension: false }), TypeError);
        assert.throws(() => trioroom(URL_, { WebSocket: FakeWebSocket, extension: "yes" }), TypeError);
        assert.throws(() => trioroom(URL_, { WebSocket: FakeWebSocket, ackEvery: 0 }), RangeError);
        assert.throws(() => trioroom(URL_, { WebSocket: FakeWebSocket, ackInterval: 0 }), RangeError);
        assert.throws(() => trioroom(URL_, { WebSocket: FakeWebSocket, requestTimeout: -1 }), RangeError);
    });

    test("says clearly when there is no WebSocket and checks its arguments", function () {
        assert.throws(() => trioroom(URL_, { WebSocket: null }), /options\.WebSocket/);
        if (globalThis.WebSocket === undefined) {
            assert.throws(() => trioroom(URL_), /options\.WebSocket/);
        }
        assert.throws(() => trioroom(42), TypeError);
        assert.throws(() => trioroom(URL_, "nope"), TypeError);
        const { FakeWebSocket } = fakeWebSocketClass();
        assert.throws(() => trioroom(URL_, { WebSocket: FakeWebSocket, reconnectJitter: 3 }), RangeError);
    });

    test("a WebSocket constructor that throws (bad URL) throws from trioroom()", function () {
        class Refusing {
            constructor() {
                throw new SyntaxError("bad url");
            }
        }
        assert.throws(() => trioroom("nope", { WebSocket: Refusing }), SyntaxError);
    });
});

describe("the root room", function () {
    test("opens on its join_ack: id, members, open event, ready()", async function () {
        const { root, welcome } = connect();
        const opened = nextEvent(root, "open");
        const ready = root.ready();
        welcome(A, [B, A]);
        await opened;
        assert.equal(await ready, root);
        assert.equal(root.open(), true);
        assert.equal(root.id(), A);
        assert.deepEqual(root.members(), [B, A]);
        assert.equal(await root.ready(), root, "resolves at once when open");
        root.close();
    });

    test("members() is a copy", function () {
        const { root, welcome } = connect();
        welcome(A, [A]);
        root.members().push("intruder");
        assert.deepEqual(root.members(), [A]);
        root.close();
    });

    test("tracks new_member and member_left, without duplicates", function () {
        const { root, socket, welcome } = connect();
        welcome(A, [A]);
        const events = [];
        root.on("new_member", (id) => events.push(["new", id]));
        root.on("member_left", (id) => events.push(["left", id]));
        socket.deliver({ room: "root", event: "new_member", payload: B });
        socket.deliver({ room: "root", event: "new_member", payload: B });
        socket.deliver({ room: "root", event: "new_member", payload: C });
        socket.deliver({ room: "root", event: "member_left", payload: B });
        socket.deliver({ room: "root", event: "member_left", payload: B });
        assert.deepEqual(events, [["new", B], ["new", C], ["left", B]]);
        assert.deepEqual(root.members(), [A, C]);
        root.close();
    });

    test("cannot be left, only closed", function () {
        const { root, welcome } = connect();
        welcome();
        assert.throws(() => root.leave(), /close\(\)/);
        root.close();
    });
});

describe("joining and leaving rooms", function () {
    test("join before the root is open waits for the root's join_ack, then sends one join", async function () {
        const { root, socket, welcome } = connect();
        const lobby = root.join("lobby");
        assert.equal(root.join("lobby"), lobby, "the same object for the same name");
        assert.deepEqual(socket.sent, []);
        welcome(A);
        assert.deepEqual(socket.sent, [
            { room: "lobby", event: "join", dst: "", src: "", payload: new Uint8Array(0) },
        ]);
        const joined = lobby.joined();
        const opened = nextEvent(lobby, "open");
        joinAck(socket, "lobby", A, [B, A]);
        assert.equal(await joined, lobby);
        await opened;
        assert.equal(lobby.open(), true);
        assert.equal(lobby.id(), A);
        assert.deepEqual(lobby.members(), [B, A]);
        assert.equal(lobby.name, "lobby");
        root.close();
    });

    test("join inside the root's open listener sends a single join", function () {
        const { root, socket, welcome } = connect();
        root.on("open", () => root.join("lobby"));
        welcome(A);
        assert.deepEqual(socket.sentEvents(), ["join"]);
        root.close();
    });

    test("join works from any room object and for non-ASCII names", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A]);
        const cafe = lobby.join("café-☕");
        assert.equal(root.rooms()["café-☕"], cafe);
        assert.equal(socket.sent[1].room, "café-☕");
        assert.equal(root.join("root"), root);
        assert.throws(() => root.join(5), TypeError);
        root.close();
    });

    test("leave sends the own ID as dst, src and payload; leave_ack closes the room", async function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A, B]);
        const closed = nextEvent(lobby, "close");
        lobby.leave();
        const leave = socket.sent.at(-1);
        assert.equal(leave.room, "lobby");
        assert.equal(leave.event, "leave");
        assert.equal(leave.dst, A);
        assert.equal(leave.src, A);
        assert.equal(Buffer.from(leave.payload).toString(), A);
        assert.equal(root.rooms().lobby, lobby, "still there until the server confirms");
        socket.deliver({ room: "lobby", event: "leave_ack", src: A, payload: A });
        await closed;
        assert.equal(lobby.open(), false);
        assert.deepEqual(lobby.members(), []);
        assert.equal(root.rooms().lobby, undefined);
        await assert.rejects(lobby.joined(), /left/);
        assert.throws(() => lobby.send("chat", "hi"), /not open/);
        root.close();
    });

    test("joining again right after leave keeps the room and ignores the stale leave_ack", async function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A]);
        lobby.leave();
        assert.equal(root.join("lobby"), lobby);
        assert.deepEqual(socket.sentEvents(), ["join", "leave", "join"]);
        let closedCount = 0;
        lobby.on("close", () => {
            closedCount += 1;
        });
        socket.deliver({ room: "lobby", event: "leave_ack", src: A, payload: A });
        joinAck(socket, "lobby", A, [A]);
        assert.equal(closedCount, 0);
        assert.equal(lobby.open(), true);
        root.close();
    });

    test("a join_ack for a room already open answers a repeated join: the member list stays", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A, B]);
        socket.deliver({ room: "lobby", event: "new_member", src: "", payload: C });
        // The server answers a repeated join with the joiner alone.
        joinAck(socket, "lobby", A, [A]);
        assert.deepEqual(lobby.members(), [A, B, C]);
        assert.equal(lobby.open(), true);
        root.close();
    });

    test("the join_ack after a leave and a new join replaces the member list", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A, B]);
        lobby.leave();
        root.join("lobby");
        socket.deliver({ room: "lobby", event: "leave_ack", src: A, payload: A });
        joinAck(socket, "lobby", A, [A, C]);
        assert.deepEqual(lobby.members(), [A, C]);
        root.close();
    });

    test("a room left before its join_ack never opens", async function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        const joined = lobby.joined();
        lobby.leave();
        let opened = false;
        lobby.on("open", () => {
            opened = true;
        });
        joinAck(socket, "lobby", A, [A]);
        socket.deliver({ room: "lobby", event: "leave_ack", src: A, payload: A });
        await assert.rejects(joined, /left/);
        assert.equal(opened, false);
        root.close();
    });

    test("leaving while disconnected forgets the room at once", function () {
        const { root, socket, welcome } = connect({ reconnect: false });
        const lobby = root.join("lobby");
        lobby.leave();
        assert.equal(root.rooms().lobby, undefined);
        welcome(A);
        assert.deepEqual(socket.sentEvents(), []);
        root.close();
    });

    test("purge leaves every room but the root", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        root.join("a");
        root.join("b");
        root.purge();
        assert.deepEqual(socket.sentEvents(), ["join", "join", "leave", "leave"]);
        root.close();
    });
});

describe("sending", function () {
    function openLobby() {
        const client = connect();
        client.welcome(A);
        const lobby = client.root.join("lobby");
        joinAck(client.socket, "lobby", A, [A, B]);
        return { ...client, lobby };
    }

    test("a broadcast carries the room, the event, an empty dst and the own ID", function () {
        const { root, socket, lobby } = openLobby();
        assert.equal(lobby.send("chat", "héllo 🌍"), lobby);
        const frame = socket.sent.at(-1);
        assert.equal(frame.room, "lobby");
        assert.equal(frame.event, "chat");
        assert.equal(frame.dst, "");
        assert.equal(frame.src, A);
        assert.equal(text(frame.payload), "héllo 🌍");
        root.close();
    });

    test("a direct message sets dst", function () {
        const { root, socket, lobby } = openLobby();
        lobby.send("whisper", "psst", B);
        assert.equal(socket.sent.at(-1).dst, B);
        root.close();
    });

    test("binary payloads of every kind go out byte for byte", function () {
        const { root, socket, lobby } = openLobby();
        const bytes = new Uint8Array(256).map((_, index) => index);
        for (const payload of [bytes, bytes.buffer, new DataView(bytes.buffer, 16, 8), new Uint32Array(bytes.buffer, 4, 2)]) {
            lobby.send("bin", payload);
            const expected = ArrayBuffer.isView(payload)
                ? new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength)
                : new Uint8Array(payload);
            assert.deepEqual(socket.sent.at(-1).payload, expected);
        }
        root.close();
    });

    test("every reserved and local event name is refused with a clear Error", function () {
        const { root, lobby } = openLobby();
        for (const event of RESERVED_EVENTS.concat(LOCAL_EVENTS)) {
            assert.throws(
                () => lobby.send(event, "x"),
                (error) => error instanceof Error && error.message.includes("'" + event + "'") && /reserved/.test(error.message),
                event,
            );
            assert.throws(() => root.send(event), /reserved/);
        }
        assert.deepEqual(
            [...REFUSED_EVENTS].sort(),
            ["close", "error", "join", "join_ack", "leave", "leave_ack", "member_left", "new_member", "open", "reconnect_failed", "reconnecting", "resume_failed", "resumed", "state"],
        );
        for (const event of ["trioroom.ack", "trioroom.reply", "trioroom.anything"]) {
            assert.throws(() => lobby.send(event, "x"), /reserved/, event);
        }
        root.close();
    });

    test("bad arguments throw TypeError; sending on a room that is not open throws", function () {
        const { root, lobby } = openLobby();
        assert.throws(() => lobby.send(5, "x"), TypeError);
        assert.throws(() => lobby.send("chat", 5), TypeError);
        assert.throws(() => lobby.send("chat", { a: 1 }), TypeError);
        assert.throws(() => lobby.send("chat", "x", 7), TypeError);
        const pending = root.join("pending");
        assert.throws(() => pending.send("chat", "x"), /not open/);
        root.close();
    });
});

describe("receiving", function () {
    test("custom events get (payload bytes, sender ID, frame)", async function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A, B]);
        const received = nextEvent(lobby, "grüße");
        socket.deliver({ room: "lobby", event: "grüße", src: B, payload: "héllo" });
        const [payload, sender, frame] = await received;
        assert.ok(payload instanceof Uint8Array);
        assert.equal(text(payload), "héllo");
        assert.equal(sender, B);
        assert.equal(frame.dst, "");
        const dm = nextEvent(lobby, "data");
        socket.deliver({ room: "lobby", event: "data", dst: A, src: B, payload: '{"n":1}' });
        const [dmPayload, dmSender, dmFrame] = await dm;
        assert.deepEqual(json(dmPayload), { n: 1 });
        assert.equal(dmSender, B);
        assert.equal(dmFrame.dst, A);
        root.close();
    });

    test("a text frame is read as the bytes of its text", async function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const received = nextEvent(root, "note");
        const bytes = Buffer.from([0, 0, 0, 4, ...Buffer.from("root"), 0, 0, 0, 4, ...Buffer.from("note"), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, ...Buffer.from("hi")]);
        socket.deliverRaw(bytes.toString("latin1"));
        assert.equal(text((await received)[0]), "hi");
        root.close();
    });

    test("frames for rooms without an object are dropped", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const errors = [];
        root.on("error", (error) => errors.push(error));
        socket.deliver({ room: "elsewhere", event: "chat", src: B, payload: "x" });
        assert.deepEqual(errors, []);
        root.close();
    });
});

describe("errors are events, never exceptions", function () {
    test("a malformed frame goes to the root's error event", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const errors = [];
        root.on("error", (error) => errors.push(error));
        socket.deliverRaw(new Uint8Array([0, 0, 0, 9, 1, 2]).buffer);
        socket.deliverRaw(new Uint8Array(21).buffer);
        socket.deliverRaw({ not: "binary" });
        assert.equal(errors.length, 3);
        assert.ok(errors[0] instanceof FrameError);
        assert.ok(errors[1] instanceof FrameError);
        assert.match(errors[1].message, /trailing/);
        assert.ok(errors[2] instanceof TypeError);
        assert.equal(root.open(), true, "the client keeps working");
        root.close();
    });

    test("nothing throws when nobody listens for errors", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        socket.deliverRaw(new Uint8Array([1, 2, 3]).buffer);
        socket.deliver({ room: "root", event: "new_member", payload: "" });
        socket.deliver({ room: "root", event: "join_ack", src: A, payload: "not json" });
        root.close();
    });

    test("a bad member list is an error on that room, which stays closed", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        const errors = [];
        lobby.on("error", (error) => errors.push(error));
        for (const payload of ["not json", '{"a":1}', "[1,2]", '["ok",null]']) {
            socket.deliver({ room: "lobby", event: "join_ack", src: A, payload });
        }
        assert.equal(errors.length, 4);
        assert.ok(errors.every((error) => error instanceof FrameError && error.frame.room === "lobby"));
        assert.equal(lobby.open(), false);
        root.close();
    });

    test("a room's errors go to the root when the room has no error listener", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        root.join("lobby");
        const errors = [];
        root.on("error", (error) => errors.push(error));
        socket.deliver({ room: "lobby", event: "join_ack", src: A, payload: "[" });
        assert.equal(errors.length, 1);
        root.close();
    });

    test("a bad root member list leaves the root closed", function () {
        const { root, socket } = connect();
        const errors = [];
        root.on("error", (error) => errors.push(error));
        socket.deliver({ room: "root", event: "join_ack", src: A, payload: "{}" });
        socket.deliver({ room: "root", event: "join_ack", src: "", payload: "[]" });
        assert.equal(root.open(), false);
        assert.ok(errors[0] instanceof FrameError);
        assert.ok(errors[1] instanceof ProtocolError);
        root.close();
    });

    test("a peer cannot fake local or client-only events", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const errors = [];
        const faked = [];
        root.on("error", (error) => errors.push(error));
        for (const event of ["open", "close", "error", "reconnecting", "reconnect_failed", "join", "leave"]) {
            root.on(event, () => faked.push(event));
            socket.deliver({ room: "root", event, src: B, payload: "x" });
        }
        assert.equal(errors.length, 7);
        assert.ok(errors.every((error) => error instanceof ProtocolError));
        // The only listener calls are the error reports themselves.
        assert.ok(faked.every((event) => event === "error"), String(faked));
        root.close();
    });

    test("a listener that throws does not stop others and is reported as an error", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const errors = [];
        const seen = [];
        root.on("error", (error) => errors.push(error.message));
        root.on("chat", () => {
            throw new Error("listener bug");
        });
        root.on("chat", () => seen.push("second"));
        socket.deliver({ room: "root", event: "chat", src: B, payload: "x" });
        assert.deepEqual(seen, ["second"]);
        assert.deepEqual(errors, ["listener bug"]);
        root.close();
    });

    test("socket errors are reported on the root", function () {
        const { root, socket, welcome } = connect({ reconnect: false });
        welcome(A);
        const errors = [];
        root.on("error", (error) => errors.push(error.message));
        socket.drop();
        assert.deepEqual(errors, ["WebSocket error: connection lost"]);
    });
});

describe("listeners", function () {
    test("off removes one listener; clearListeners removes by name, all but some, or all", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const seen = [];
        const chat = () => seen.push("chat");
        const news = () => seen.push("news");
        const other = () => seen.push("other");
        root.on("chat", chat).on("news", news).on("other", other);
        root.off("chat", chat);
        root.clearListeners("news");
        for (const event of ["chat", "news", "other"]) {
            socket.deliver({ room: "root", event, src: B });
        }
        assert.deepEqual(seen, ["other"]);

        root.on("chat", chat).on("news", news);
        root.clearListeners(["news"]);
        seen.length = 0;
        for (const event of ["chat", "news", "other"]) {
            socket.deliver({ room: "root", event, src: B });
        }
        assert.deepEqual(seen, ["news"]);

        root.clearListeners();
        seen.length = 0;
        socket.deliver({ room: "root", event: "news", src: B });
        assert.deepEqual(seen, []);
        assert.throws(() => root.clearListeners(5), TypeError);
        root.close();
    });

    test("once listeners and listener `this`", function () {
        const { root, socket, welcome } = connect();
        welcome(A);
        const seen = [];
        root.once("chat", function () {
            seen.push(this === root);
        });
        socket.deliver({ room: "root", event: "chat", src: B });
        socket.deliver({ room: "root", event: "chat", src: B });
        assert.deepEqual(seen, [true]);
        root.close();
    });
});

describe("state per client and after the socket closes", function () {
    test("two clients in one process share nothing", function () {
        const first = connect();
        const second = connect();
        first.welcome(A);
        second.welcome(B);
        const firstLobby = first.root.join("lobby");
        const secondLobby = second.root.join("lobby");
        assert.notEqual(firstLobby, secondLobby);
        joinAck(first.socket, "lobby", A, [A]);
        assert.equal(firstLobby.open(), true);
        assert.equal(secondLobby.open(), false);
        assert.equal(first.root.id(), A);
        assert.equal(second.root.id(), B);
        assert.deepEqual(second.socket.sentEvents(), ["join"]);
        first.root.close();
        assert.equal(second.root.open(), true);
        second.root.close();
    });

    test("open() is false once the socket is closing, and after it closed", async function () {
        const { root, socket, welcome } = connect({ reconnect: false });
        welcome(A);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A, B]);
        socket.readyState = 2;
        assert.equal(root.open(), false);
        assert.equal(lobby.open(), false);
        const order = [];
        lobby.on("close", () => order.push("lobby"));
        root.on("close", () => order.push("root"));
        socket.drop();
        assert.deepEqual(order, ["lobby", "root"]);
        assert.equal(root.open(), false);
        assert.deepEqual(lobby.members(), []);
        assert.equal(lobby.id(), "");
        await assert.rejects(root.ready(), /reconnect is off/);
        assert.throws(() => root.join("x"), /closed/);
    });

    test("joined() can time out", async function () {
        const { root, welcome } = connect();
        welcome(A);
        const lobby = root.join("lobby");
        await assert.rejects(lobby.joined(5), TimeoutError);
        await assert.rejects(lobby.joined(-1), RangeError);
        root.close();
    });
});

describe("reconnecting", function () {
    const fast = { reconnectDelay: 1, reconnectMaxDelay: 8, reconnectJitter: 0 };

    test("after a drop: reconnecting event, new socket, new ID, rooms joined again", async function () {
        const { root, socket, sockets, welcome, nextSocket } = connect(fast);
        welcome(A, [A]);
        const lobby = root.join("lobby");
        joinAck(socket, "lobby", A, [A, B]);
        lobby.send("chat", "before");

        const events = [];
        root.on("close", () => events.push("root close"));
        lobby.on("close", () => events.push("lobby close"));
        const reconnecting = nextEvent(root, "reconnecting");
        const created = nextSocket();
        socket.drop();
        assert.deepEqual(events, ["lobby close", "root close"]);
        assert.deepEqual(await reconnecting, [1, 1]);
        const fresh = await created;
        assert.equal(sockets.length, 2, "one new socket after the delay");

        fresh.accept();
        const rootOpen = nextEvent(root, "open");
        const lobbyOpen = nextEvent(lobby, "open");
        welcome(C, [B, C], fresh);
        await rootOpen;
        assert.equal(root.id(), C, "the server gives a new ID");
        assert.deepEqual(fresh.sent.map((frame) => [frame.room, frame.event]), [["lobby", "join"]]);
        joinAck(fresh, "lobby", C, [B, C]);
        await lobbyOpen;
        assert.equal(lobby.id(), C);
        assert.deepEqual(lobby.members(), [B, C]);
        lobby.send("chat", "after");
        assert.equal(fresh.sent.at(-1).src, C);
        root.close();
    });

    test("backs off with doubling delays and gives up after maxReconnectAttempts", async function () {
        const { root, sockets, welcome, nextSocket } = connect({ ...fast, maxReconnectAttempts: 3 });
        welcome(A);
        const delays = [];
        root.on("reconnecting", (attempt, delay) => {
            delays.push([attempt, delay]);
            // The server is down: the next socket fails as soon as it exists.
            nextSocket().then((socket) => socket.drop());
        });
        const failed = nextEvent(root, "reconnect_failed");
        sockets[0].drop();
        const ready = assert.rejects(root.ready(), /gave up/);
        assert.deepEqual(await failed, [3]);
        assert.deepEqual(delays, [[1, 1], [2, 2], [3, 4]]);
        assert.equal(sockets.length, 4);
        await ready;
        await assert.rejects(root.ready(), /gave up reconnecting after 3 attempts/);
    });

    test("the attempt count starts over only once a connection has stayed up for reconnectResetAfter", async function () {
        const { root, sockets, welcome, nextSocket } = connect({ ...fast, reconnectResetAfter: 100 });
        welcome(A);
        const attempts = [];
        root.on("reconnecting", (attempt) => attempts.push(attempt));
        async function flap() {
            const created = nextSocket();
            sockets.at(-1).drop();
            const fresh = await created;
            fresh.accept();
            welcome(B, [B], fresh);
        }
        // A server that accepts and drops at once: the backoff keeps growing.
        await flap();
        await flap();
        await flap();
        assert.deepEqual(attempts, [1, 2, 3]);
        // Up for longer than reconnectResetAfter: the next drop starts over.
        await new Promise((resolve) => setTimeout(resolve, 300));
        await flap();
        assert.deepEqual(attempts, [1, 2, 3, 1]);
        root.close();
    });

    test("close() stops reconnecting for good", async function () {
        const { root, sockets, welcome } = connect({ reconnectDelay: 0, reconnectJitter: 0 });
        welcome(A);
        const lobby = root.join("lobby");
        const joined = assert.rejects(lobby.joined(), /closed/);
        const closed = nextEvent(root, "close");
        root.close(1000, "bye");
        await closed;
        assert.deepEqual(sockets[0].closeCalls, [[1000, "bye"]]);
        sockets[0].drop(1000);
        // A reconnect would use a 0 ms timer, which fires before this later, longer one.
        await new Promise((resolve) => setTimeout(resolve, 20));
        assert.equal(sockets.length, 1);
        await joined;
        await assert.rejects(root.ready(), /closed/);
        assert.throws(() => root.join("again"), /closed/);
        assert.equal(root.close(), root, "closing twice is fine");
        assert.throws(() => root.close(1006), RangeError);
    });

    test("close() during a pending reconnect cancels it", async function () {
        const { root, sockets, welcome } = connect({ reconnectDelay: 5, reconnectJitter: 0 });
        welcome(A);
        const reconnecting = nextEvent(root, "reconnecting");
        sockets[0].drop();
        await reconnecting;
        root.close();
        // Timers fire in order of expiry: the cancelled 5 ms one would have run before this one.
        await new Promise((resolve) => setTimeout(resolve, 30));
        assert.equal(sockets.length, 1);
    });

    test("reconnect: false stays closed", async function () {
        const { root, sockets, welcome } = connect({ reconnect: false, reconnectDelay: 0 });
        welcome(A);
        let reconnecting = false;
        root.on("reconnecting", () => {
            reconnecting = true;
        });
        sockets[0].drop();
        // A reconnect would use a 0 ms timer, which fires before this later, longer one.
        await new Promise((resolve) => setTimeout(resolve, 20));
        assert.equal(sockets.length, 1);
        assert.equal(reconnecting, false);
    });
});

describe("no silent failures", function () {
    test("names that are not well-formed UTF-16 throw TypeError at the call", async function () {
        const { root, welcome } = connect();
        welcome(A);
        assert.throws(() => root.join("bad\uD800"), TypeError);
        assert.throws(() => root.join("\uDC00bad"), TypeError);
        assert.throws(() => root.send("ev\uD83D", "x"), /not well-formed UTF-16/);
        assert.throws(() => root.send("ev", "x", "dst\uDFFF"), TypeError);
        await assert.rejects(root.request("ev\uD800"), TypeError);
        // A well-formed pair is fine.
        assert.equal(root.join("smile \uD83D\uDE00").name, "smile \uD83D\uDE00");
        root.close();
    });

    test("an error with no listener goes to the console, once per message", function (t) {
        const logged = [];
        t.mock.method(console, "error", (...args) => logged.push(args));
        const { root, socket, welcome } = connect();
        welcome(A);
        socket.deliver({ room: "root", event: "open", src: B });
        socket.deliver({ room: "root", event: "open", src: B });
        assert.equal(logged.length, 1);
        assert.ok(logged[0].some((arg) => arg instanceof ProtocolError), "the error itself is logged");
        // With a listener, the listener gets it and the console nothing.
        const seen = [];
        root.on("error", (error) => seen.push(error));
        socket.deliver({ room: "root", event: "close", src: B });
        assert.equal(seen.length, 1);
        assert.equal(logged.length, 1);
        root.close();
    });
});

describe("connect timeout", function () {
    test("an attempt that does not open the root within connectTimeout is dropped and retried", async function () {
        const { FakeWebSocket, sockets, nextSocket } = fakeWebSocketClass();
        const root = trioroom(URL_, { WebSocket: FakeWebSocket, connectTimeout: 20, reconnectDelay: 1, reconnectJitter: 0 });
        const errors = [];
        root.on("error", (error) => errors.push(error));
        // The first socket never opens (black-holed); the second opens but never gets a join_ack.
        const second = await nextSocket();
        second.accept();
        const third = await nextSocket();
        assert.equal(sockets.length, 3);
        assert.deepEqual(sockets[0].closeCalls.length + sockets[1].closeCalls.length, 2, "each abandoned socket is closed");
        assert.ok(errors.length >= 2 && errors.every((error) => error instanceof TimeoutError), String(errors));
        assert.equal(root.state, "connecting");
        third.accept();
        third.deliver({ room: "root", event: "join_ack", src: A, payload: memberList([A]) });
        assert.equal(root.state, "open");
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.equal(sockets.length, 3, "no timeout once open");
        root.close();
    });
});
