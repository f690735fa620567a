// Compiled with `tsc --strict` by test/types.test.js: the declarations must accept what the
// README shows and reject misuse (each @ts-expect-error must be an error). The same test
// checks that this file uses every public member of every module.

import trioroomDefault, {
    CONNECTION_DEFAULTS,
    EXTENSION_DEFAULTS,
    EXTENSION_PREFIX,
    EXTENSION_PROTOCOL,
    FrameError,
    json,
    KICK_CLOSE_CODES,
    LOCAL_EVENTS,
    OFFLINE_QUEUE_DEFAULTS,
    ProtocolError,
    REFUSED_EVENTS,
    RESERVED_EVENTS,
    ROOT_ROOM,
    Reply,
    RequestError,
    resumeUrl,
    STATES,
    ServerError,
    text,
    TimeoutError,
    trioroom,
    type CloseInfo,
    type ConnectionOptions,
    type ConnectionState,
    type ExtensionOptions,
    type Frame,
    type LocalEvent,
    type MessageListener,
    type OfflineQueueOptions,
    type Payload,
    type ReconnectOptions,
    type RequestOptions,
    type ReservedEvent,
    type ResumeFailure,
    type Room,
    type RootRoom,
    type ServerErrorCode,
    type TrioroomOptions,
    type UrlFunction,
    type WebSocketConstructor,
} from "../../trioroom.js";
import {
    decodeFrame,
    encodeFrame,
    HEADER_SIZE,
    MAX_FIELD_SIZE,
    MIN_FRAME_SIZE,
    parseMemberId,
    parseMemberList,
    payloadBytes,
    type FrameInput,
    type Payload as CodecPayload,
    type ReservedEvent as CodecReservedEvent,
} from "../../codec.js";
import { decodeUtf8, describe, encodeUtf8, isArrayBuffer, toUint8Array, Utf8Error, type BinaryLike } from "../../utf8.js";
import { createEmitter, rethrowLater, type Emitter, type EmitterOptions, type Listener } from "../../emitter.js";
import {
    RECONNECT_DEFAULTS,
    reconnectDelay,
    reconnectOptions,
    type ReconnectOptions as BackoffOptions,
    type ReconnectSettings,
} from "../../backoff.js";

// -- options -------------------------------------------------------------------------------

const reconnecting: ReconnectOptions = {
    reconnect: true,
    reconnectDelay: 250,
    reconnectMaxDelay: 5000,
    reconnectJitter: 0.5,
    maxReconnectAttempts: 10,
};
const extension: ExtensionOptions = { extension: true, ackEvery: 64, ackInterval: 5000, requestTimeout: 30000 };
const queueBounds: OfflineQueueOptions = { maxMessages: 100, maxBytes: 1 << 20 };
const lifecycle: ConnectionOptions = {
    connectTimeout: 10000,
    reconnectResetAfter: 5000,
    reconnectAfterKick: false,
    offlineQueue: queueBounds,
};
const socketClass: WebSocketConstructor = WebSocket;
const options: TrioroomOptions = { ...reconnecting, ...extension, ...lifecycle, WebSocket: socketClass, protocols: ["x.v1"] };
const root: RootRoom = trioroom("ws://127.0.0.1:8080/ws", options);
const sameFactory: typeof trioroom = trioroomDefault;
trioroom(new URL("wss://chat.example.com/ws"), { offlineQueue: true });

// The URL may come from a function, sync or async, called before every attempt.
const fresh: UrlFunction = async () => "wss://chat.example.com/ws?token=" + (await Promise.resolve("t"));
trioroom(fresh);
trioroom(() => new URL("wss://chat.example.com/ws"));
// @ts-expect-error the function must return a URL
trioroom(() => 42);
// @ts-expect-error the URL must be a string, a URL or a function
trioroom(42);
// @ts-expect-error offlineQueue takes bounds or a boolean
trioroom("ws://x", { offlineQueue: 5 });

// -- the root: state and lifecycle events ---------------------------------------------------

const state: ConnectionState = root.state;
const states: readonly ConnectionState[] = STATES;
// @ts-expect-error state is read-only
root.state = "open";
root.on("state", (now, previous) => {
    const changed: boolean = now !== previous;
    void changed;
});
root.on("close", (info: CloseInfo) => {
    const again: boolean = info.willReconnect;
    const why: string = info.code + " " + info.reason;
    void [again, why];
});
root.on("reconnecting", (attempt, delayMs) => attempt + delayMs);
root.on("reconnect_failed", (attempts) => attempts);
root.on("resumed", (replayed) => replayed.toFixed());
root.on("resume_failed", (reason: ResumeFailure) => reason.toUpperCase());
// Root events through addListener and once too.
root.addListener("reconnecting", (attempt: number, delayMs: number) => attempt * delayMs);
root.addListener("state", (now: ConnectionState) => now);
root.addListener("close", (info) => info.code);
root.once("resumed", (replayed) => replayed);
root.once("state", (now) => now.length);
root.once("open", function () {
    const self: RootRoom = this;
    void self;
});
root.on("error", (error) => {
    if (error instanceof ServerError) {
        const code: ServerErrorCode = error.code;
        const known: ServerErrorCode[] = ["cancelled", "unknown", "join_refused", "timeout"];
        const where: string = error.room + error.event;
        const frame: Frame | undefined = error.frame;
        void [code, known, where, frame];
    } else if (error instanceof ProtocolError) {
        const frame: Frame | undefined = error.frame;
        void frame;
    }
});

// -- rooms ---------------------------------------------------------------------------------

const onChat: MessageListener = function (payload, senderId, frame) {
    const message: string = text(payload);
    const direct: boolean = frame.dst !== "";
    const fields: string = frame.room + frame.event + frame.src;
    const bytes: Uint8Array = frame.payload;
    void [message, senderId, direct, fields, bytes, this.name];
};

root.on("open", function () {
    const lobby: Room = root.join("lobby");
    lobby.on("open", () => lobby.send("chat", "Hello room!"));
    lobby.on("close", (info) => info.willReconnect);
    lobby.on("chat", onChat);
    lobby.addListener("chat", onChat);
    lobby.addListener("close", (info: CloseInfo) => info.reason);
    lobby.once("new_member", (id) => id.toUpperCase());
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
    const listeners: Listener[] = lobby.listeners("chat");
    const count: number = lobby.listenerCount("chat");
    const names: string[] = lobby.eventNames();
    const handled: boolean = lobby.emit("chat", new Uint8Array(), "me", decodeFrame(encodeFrame({ room: "lobby", event: "chat" })));
    void [members, isOpen, listeners, count, names, handled];
    lobby.off("chat", onChat);
    lobby.removeListener("chat", onChat);
    lobby.removeAllListeners("chat");
    lobby.clearListeners("chat");
    lobby.clearListeners(["open"]);
    lobby.clearListeners();
    lobby.leave();
});

async function requests(): Promise<void> {
    const lobby = await root.join("lobby").joined();
    const requestOptions: RequestOptions = { timeout: 5000, dst: root.id() };
    const reply: Reply = await lobby.request("add", "[1, 2]", requestOptions);
    const sum: { sum: number } = reply.json<{ sum: number }>();
    const asText: string = reply.text();
    const bytes: Uint8Array = reply;
    await lobby.request("ping");
    try {
        await lobby.request("x");
    } catch (error) {
        if (error instanceof RequestError) {
            const code: "not_open" | "unsupported" | "disconnected" | "closed" = error.code;
            const where: string = error.event + error.room;
            void [code, where];
        } else if (error instanceof TimeoutError) {
            const code: "timeout" = error.code;
            const where: string | undefined = error.event ?? error.room;
            void [code, where];
        }
    }
    const extended: boolean = root.extended();
    const protocol: "trioroom.v1" = EXTENSION_PROTOCOL;
    const prefix: "trioroom." = EXTENSION_PREFIX;
    void [sum, asText, bytes, extended, protocol, prefix];
    // @ts-expect-error request options are an object
    await lobby.request("x", "", 5000);
}
void requests;

async function flows(): Promise<void> {
    const ready: RootRoom = await root.ready(10000);
    const lobby = await ready.join("lobby").joined(5000);
    const data: { n: number } = json<{ n: number }>(new Uint8Array());
    const rooms: Readonly<Record<string, Room>> = root.rooms();
    void [lobby, data, rooms];
    root.purge().close(1000, "bye");
}
void flows;

// @ts-expect-error a room has no close(); only the root does
root.join("x").close();
// @ts-expect-error a room has no state; only the root does
void root.join("x").state;

// -- constants -----------------------------------------------------------------------------

const localEvents: readonly LocalEvent[] = LOCAL_EVENTS;
const reservedEvents: readonly ReservedEvent[] = RESERVED_EVENTS;
const codecReserved: readonly CodecReservedEvent[] = RESERVED_EVENTS;
const refused: readonly string[] = REFUSED_EVENTS;
const kicks: readonly number[] = KICK_CLOSE_CODES;
const requestTimeout: number = EXTENSION_DEFAULTS.requestTimeout;
const connectTimeout: number = CONNECTION_DEFAULTS.connectTimeout;
const queueDefault: number = OFFLINE_QUEUE_DEFAULTS.maxMessages;
const resumed: string = resumeUrl("ws://x/ws?a=1", "token", 3);
const rootName: "root" = ROOT_ROOM;

// -- codec, utf8, emitter, backoff -----------------------------------------------------------

const input: FrameInput = { room: ROOT_ROOM, event: "e", dst: "", src: "", payload: "x" };
const payload: Payload = input.payload;
const codecPayload: CodecPayload = new Uint8Array(1);
const frame: Frame = decodeFrame(encodeFrame(input));
const size: 20 = MIN_FRAME_SIZE;
const header: 4 = HEADER_SIZE;
const maxField: 4294967295 = MAX_FIELD_SIZE;
const bytes: Uint8Array = payloadBytes("x");
const ids: string[] = parseMemberList(bytes);
const id: string = parseMemberId(bytes);
const binary: BinaryLike = new ArrayBuffer(1);
const decoded: string = decodeUtf8(encodeUtf8("é"), { fatal: true });
const view: Uint8Array = toUint8Array(binary);
const isBuffer: boolean = isArrayBuffer(binary);
const described: string = describe(null);
try {
    decodeFrame(new Uint8Array(3));
} catch (error) {
    if (error instanceof FrameError) {
        const where: string = error.reason + error.offset;
        const about: Frame | undefined = error.frame;
        void [where, about];
    } else if (error instanceof Utf8Error) {
        const offset: number = error.offset;
        void offset;
    }
}

const emitterOptions: EmitterOptions<object> = { target: {}, onListenerError: (error, event) => void [error, event] };
const emitter: Emitter<object> = createEmitter(emitterOptions);
const plain: Emitter<Emitter<unknown>> = createEmitter();
const listener: Listener = () => {};
plain.on("x", listener).emit("x");
plain.addListener("x", listener);
plain.once("x", listener);
plain.off("x", listener);
plain.removeListener("x", listener);
plain.removeAllListeners("x");
const emitterListeners: Listener[] = plain.listeners("x");
const emitterCount: number = plain.listenerCount("x");
const emitterNames: string[] = plain.eventNames();
rethrowLater(new Error("x"));

const backoffOptions: BackoffOptions = { reconnectDelay: 1 };
const settings: ReconnectSettings = reconnectOptions(backoffOptions);
const delay: number = reconnectDelay(1, settings, Math.random);
const defaults: number = RECONNECT_DEFAULTS.reconnectMaxDelay;

const errors: Error[] = [new FrameError("r", 0), new ProtocolError("p"), new TimeoutError("t"), new Utf8Error("u", 0)];
errors.push(new ServerError("cancelled", "m", { event: "e", room: "r" }), new RequestError("closed", "m"));
void [
    sameFactory, state, states, localEvents, reservedEvents, codecReserved, refused, kicks, requestTimeout,
    connectTimeout, queueDefault, resumed, rootName, payload, codecPayload, frame, size, header, maxField, ids, id,
    decoded, view, isBuffer, described, emitter, emitterListeners, emitterCount, emitterNames, delay, defaults, errors,
];
