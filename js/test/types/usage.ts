// Compiled by test/types.test.js: the declarations must accept what the README shows
// and reject misuse (each @ts-expect-error must be an error).

import trioroomDefault, {
    FrameError,
    json,
    LOCAL_EVENTS,
    ProtocolError,
    REFUSED_EVENTS,
    RESERVED_EVENTS,
    ROOT_ROOM,
    text,
    TimeoutError,
    trioroom,
    EXTENSION_PROTOCOL,
    Reply,
    RequestError,
    ServerError,
    type Frame,
    type Room,
    type RootRoom,
    type TrioroomOptions,
} from "../../trioroom.js";
import { decodeFrame, encodeFrame, MIN_FRAME_SIZE, parseMemberId, parseMemberList, payloadBytes } from "../../codec.js";
import { decodeUtf8, encodeUtf8, Utf8Error } from "../../utf8.js";
import { createEmitter, rethrowLater } from "../../emitter.js";
import { RECONNECT_DEFAULTS, reconnectDelay, reconnectOptions } from "../../backoff.js";

const options: TrioroomOptions = {
    WebSocket,
    reconnect: true,
    reconnectDelay: 250,
    reconnectMaxDelay: 5000,
    reconnectJitter: 0.5,
    maxReconnectAttempts: 10,
    protocols: ["x.v1"],
    extension: true,
    ackEvery: 64,
    ackInterval: 5000,
    requestTimeout: 10000,
};
const root: RootRoom = trioroom("ws://127.0.0.1:8080/ws", options);
const sameFactory: typeof trioroom = trioroomDefault;

root.on("open", function () {
    const lobby: Room = root.join("lobby");
    lobby.on("open", () => lobby.send("chat", "Hello room!"));
    lobby.on("chat", (payload, senderId, frame) => {
        const message: string = text(payload);
        const from: string = senderId;
        const direct: boolean = frame.dst !== "";
        void [message, from, direct];
    });
    lobby.on("new_member", (id) => id.toUpperCase());
    lobby.on("member_left", (id: string) => id.length);
    lobby.on("error", (error) => error.message);
    lobby.send("bytes", new Uint8Array([1, 2]), root.id());
    lobby.send("buffer", new ArrayBuffer(2));
    lobby.send("view", new DataView(new ArrayBuffer(2)));
    lobby.send("nothing");
    // @ts-expect-error numbers are not payloads
    lobby.send("bad", 42);
    const members: string[] = lobby.members();
    const isOpen: boolean = lobby.open();
    void [members, isOpen];
    lobby.off("chat", () => {});
    lobby.clearListeners("chat");
    lobby.clearListeners(["open"]);
    lobby.clearListeners();
    lobby.leave();
});
root.on("reconnecting", (attempt, delayMs) => attempt + delayMs);
root.on("reconnect_failed", (attempts) => attempts);
root.on("resumed", (replayed) => replayed.toFixed());
root.on("resume_failed", (reason) => reason.toUpperCase());
root.on("error", (error) => {
    if (error instanceof ServerError) {
        const code: string = error.code;
        const where: string = error.room + error.event;
        void [code, where];
    }
});

async function requests(): Promise<void> {
    const lobby = await root.join("lobby").joined();
    const reply: Reply = await lobby.request("add", "[1, 2]", { timeout: 5000 });
    const sum: { sum: number } = reply.json<{ sum: number }>();
    const asText: string = reply.text();
    const bytes: Uint8Array = reply;
    await lobby.request("ping");
    await lobby.request("dm", new Uint8Array([1]), { dst: root.id() });
    try {
        await lobby.request("x");
    } catch (error) {
        if (error instanceof ServerError || error instanceof RequestError || error instanceof TimeoutError) {
            const code: string = error.code;
            void code;
        }
    }
    const extended: boolean = root.extended();
    const protocol: "trioroom.v1" = EXTENSION_PROTOCOL;
    void [sum, asText, bytes, extended, protocol];
    // @ts-expect-error request options are an object
    await lobby.request("x", "", 5000);
}
void requests;

async function flows(): Promise<void> {
    const ready: RootRoom = await root.ready(10000);
    const lobby = await ready.join("lobby").joined();
    const data: { n: number } = json<{ n: number }>(new Uint8Array());
    void [lobby, data];
    const rooms: Readonly<Record<string, Room>> = root.rooms();
    void rooms;
    root.purge().close(1000, "bye");
}
void flows;

// @ts-expect-error a room has no close(); only the root does
root.join("x").close();
// @ts-expect-error the URL must be a string or URL
trioroom(42);

const frame: Frame = decodeFrame(encodeFrame({ room: ROOT_ROOM, event: "e", payload: "x" }));
const size: 20 = MIN_FRAME_SIZE;
const bytes: Uint8Array = payloadBytes("x");
const ids: string[] = parseMemberList(bytes);
const id: string = parseMemberId(bytes);
const decoded: string = decodeUtf8(encodeUtf8("é"), { fatal: true });
const emitter = createEmitter();
emitter.on("x", () => {}).emit("x");
rethrowLater(new Error("x"));
const delay: number = reconnectDelay(1, reconnectOptions({ reconnectDelay: 1 }));
const defaults: number = RECONNECT_DEFAULTS.reconnectMaxDelay;
const names: readonly string[] = [...RESERVED_EVENTS, ...LOCAL_EVENTS, ...REFUSED_EVENTS];
const errors: Error[] = [new FrameError("r", 0), new ProtocolError("p"), new TimeoutError("t"), new Utf8Error("u", 0)];
void [sameFactory, frame, size, ids, id, decoded, delay, defaults, names, errors];
