import type { ReconnectOptions } from "./backoff.js";
import type { Frame, Payload } from "./codec.js";
import type { Listener } from "./emitter.js";

export { FrameError, RESERVED_EVENTS, ROOT_ROOM } from "./codec.js";
export type { Frame, Payload, ReservedEvent } from "./codec.js";
export { json, text } from "./utf8.js";
export type { ReconnectOptions } from "./backoff.js";

/** Events only the client emits; never sent or accepted on the wire. */
export type LocalEvent =
    | "open"
    | "close"
    | "error"
    | "reconnecting"
    | "reconnect_failed"
    | "resumed"
    | "resume_failed"
    | "state";
export declare const LOCAL_EVENTS: readonly LocalEvent[];

/** What `root.state` says about the connection. */
export type ConnectionState = "connecting" | "open" | "suspended" | "reconnecting" | "closed";
/** The states, in the order a connection usually walks through them. */
export declare const STATES: readonly ConnectionState[];
/** Close codes that end the client unless `reconnectAfterKick` is true: 4000, 1008, 1009. */
export declare const KICK_CLOSE_CODES: readonly number[];

/** What a `close` event carries. */
export interface CloseInfo {
    /** The WebSocket close code (1006: no close frame, e.g. a dropped network). */
    readonly code: number;
    readonly reason: string;
    /** Whether the client reconnects (and the room opens again). */
    readonly willReconnect: boolean;
}
/** Names `send` refuses: the protocol's reserved ones and the local ones (and any starting with `trioroom.`). */
export declare const REFUSED_EVENTS: readonly string[];

/** The WebSocket subprotocol of the extension. */
export declare const EXTENSION_PROTOCOL: "trioroom.v1";
/** Event names with this prefix belong to the extension. */
export declare const EXTENSION_PREFIX: "trioroom.";

/** The extension's options and their defaults. */
export interface ExtensionOptions {
    /** Offer the `trioroom.v1` subprotocol (default true); false speaks the plain protocol only. */
    extension?: boolean;
    /** Acknowledge received frames after this many (default 64). */
    ackEvery?: number;
    /** ...and at least this often, ms (default 5000; Infinity: no timer). */
    ackInterval?: number;
    /** Default timeout of `request()`, ms (default 30000, the server's; Infinity: none). */
    requestTimeout?: number;
}
export declare const EXTENSION_DEFAULTS: Readonly<Required<ExtensionOptions>>;

/** Bounds of the offline queue. */
export interface OfflineQueueOptions {
    /** Messages held at most (default 100). */
    maxMessages?: number;
    /** Bytes (encoded frames) held at most (default 1 MiB). */
    maxBytes?: number;
}
export declare const OFFLINE_QUEUE_DEFAULTS: Readonly<Required<OfflineQueueOptions>>;

/** Options about the connection's lifecycle, and their defaults. */
export interface ConnectionOptions {
    /** Each attempt must open the root (or resume) within this, ms (default 10000; Infinity: none). */
    connectTimeout?: number;
    /** The attempt count (and so the backoff) starts over once a connection stayed open this long, ms (default 5000). */
    reconnectResetAfter?: number;
    /** Reconnect after a kick (4000) or a policy close (1008, 1009) too; default false: they end the client. */
    reconnectAfterKick?: boolean;
    /**
     * Keep `send` and `request` calls made while (re)connecting and send them
     * in order once open (default false; true: 100 messages, 1 MiB). A call
     * over the bound throws (`send`) or rejects (`request`) with a RangeError.
     */
    offlineQueue?: boolean | OfflineQueueOptions;
}
export declare const CONNECTION_DEFAULTS: Readonly<{
    connectTimeout: number;
    reconnectResetAfter: number;
    reconnectAfterKick: boolean;
    offlineQueue: boolean;
}>;

/** `url` with `resume=<token>&last=<count>` in its query; other parameters are kept as they are. */
export declare function resumeUrl(url: string, token: string, last: number): string;

/** Why a resume failed: the server's reason, or the client's own. */
export type ResumeFailure =
    | "expired"
    | "buffer_overflow"
    | "unknown_token"
    | "node_lost"
    | "identity_mismatch"
    | "closed"
    | "kicked"
    | "server_shutdown"
    | "bad_request"
    /** The server no longer selected the extension. */
    | "unsupported"
    /** The server answered the resume with something else. */
    | "unanswered"
    | (string & {});

/** The server broke the protocol (e.g. sent an event only clients send). */
export declare class ProtocolError extends Error {
    constructor(message: string, frame?: Frame);
    readonly name: "ProtocolError";
    readonly frame?: Frame;
}

/** `ready(timeout)`, `joined(timeout)` or `request()` ran out of time. */
export declare class TimeoutError extends Error {
    constructor(message: string);
    readonly name: "TimeoutError";
    readonly code: "timeout";
    /** For a request: its event and room. */
    event?: string;
    room?: string;
}

/** Codes of `trioroom.error` (a handler's `RequestError` may use its own). */
export type ServerErrorCode =
    | "join_refused"
    | "rate_limited"
    | "message_too_big"
    | "malformed"
    | "not_a_member"
    | "unknown_destination"
    /** During a Redis outage, a message did not reach other nodes (sent after the fact). */
    | "backplane_unavailable"
    | "handler_error"
    | "timeout"
    /** The socket closed (or a resume replaced it) while the request's handler ran. */
    | "cancelled"
    /** The server's error frame named no code. */
    | "unknown"
    | (string & {});

/** What the server reported with `trioroom.error`: a request's rejection or an `error` event. */
export declare class ServerError extends Error {
    constructor(code: string, message: string, details?: { event?: string; room?: string; frame?: Frame });
    readonly name: "ServerError";
    readonly code: ServerErrorCode;
    /** The event concerned ("join" for a refused join), or "". */
    readonly event: string;
    /** The room of the frame. */
    readonly room: string;
    readonly frame?: Frame;
}

/** A request the client could not complete. */
export declare class RequestError extends Error {
    constructor(code: string, message: string, details?: { event?: string; room?: string });
    readonly name: "RequestError";
    readonly code: "not_open" | "unsupported" | "disconnected" | "closed";
    readonly event: string;
    readonly room: string;
}

/** The answer to `request()`: the reply's payload bytes. */
export declare class Reply extends Uint8Array {
    /** The payload as UTF-8 text. */
    text(): string;
    /** The payload as JSON. */
    json<T = any>(): T;
}

export interface RequestOptions {
    /** ms; default the client's `requestTimeout`. */
    timeout?: number;
    /** Send to this member only (a direct message). */
    dst?: string;
}

/** A WebSocket constructor: the browser's, or `WebSocket` from the `ws` package on Node. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => unknown;

export interface TrioroomOptions extends ReconnectOptions, ExtensionOptions, ConnectionOptions {
    /** Default `globalThis.WebSocket`; Node 20 has none, pass the `ws` package's. */
    WebSocket?: WebSocketConstructor;
    /** Subprotocols for the handshake. */
    protocols?: string | string[];
}

/** Called for a custom event: the payload bytes, the sender's ID, and the whole frame (`frame.dst` tells a DM). */
export type MessageListener = (this: Room, payload: Uint8Array, senderId: string, frame: Frame) => void;

/** A room on one connection. */
export interface Room {
    /** The room's name. */
    readonly name: string;

    /** Join the room `name` on this connection; the same object for a name already joined. */
    join(name: string): Room;
    /** Leave this room; `close` follows when the server confirms. Throws on the root. */
    leave(): this;
    /** Send `event` to the other members, or only to the member `dst`. Throws for reserved names or when not open. */
    send(event: string, payload?: Payload, dst?: string): this;
    /**
     * Send `event` and wait for the server's answer (`trioroom.v1`): resolves
     * with the reply's payload, rejects with a {@link ServerError} (the
     * server's code), a {@link TimeoutError} or a {@link RequestError}.
     */
    request(event: string, payload?: Payload, options?: RequestOptions): Promise<Reply>;
    /** Whether the room is joined and the connection is up. */
    open(): boolean;
    /** A copy of the member IDs, this client's included. */
    members(): string[];
    /** This client's ID ("" while the room is not open). */
    id(): string;
    /** Resolve with the room once it is open; reject if it is left, the client closes, or the timeout passes. */
    joined(timeoutMs?: number): Promise<this>;

    on(event: "open", listener: (this: Room) => void): this;
    on(event: "close", listener: (this: Room, info: CloseInfo) => void): this;
    on(event: "new_member" | "member_left", listener: (this: Room, memberId: string) => void): this;
    on(event: "error", listener: (this: Room, error: Error) => void): this;
    on(event: string, listener: MessageListener): this;
    addListener(event: "open", listener: (this: Room) => void): this;
    addListener(event: "close", listener: (this: Room, info: CloseInfo) => void): this;
    addListener(event: "new_member" | "member_left", listener: (this: Room, memberId: string) => void): this;
    addListener(event: "error", listener: (this: Room, error: Error) => void): this;
    addListener(event: string, listener: MessageListener): this;
    once(event: "open", listener: (this: Room) => void): this;
    once(event: "close", listener: (this: Room, info: CloseInfo) => void): this;
    once(event: "new_member" | "member_left", listener: (this: Room, memberId: string) => void): this;
    once(event: "error", listener: (this: Room, error: Error) => void): this;
    once(event: string, listener: MessageListener): this;
    off(event: string, listener: Listener): this;
    removeListener(event: string, listener: Listener): this;
    removeAllListeners(event?: string): this;
    /**
     * Remove listeners: of one event, of all events but the listed ones
     * (the wsrooms form), or of all events.
     */
    clearListeners(eventOrExceptions?: string | string[]): this;
    listeners(event?: string): Listener[];
    listenerCount(event: string): number;
    eventNames(): string[];
    /** Call this room's listeners locally; nothing is sent. */
    emit(event: string, ...args: unknown[]): boolean;
}

/** The root room, returned by {@link trioroom}: one per connection. */
export interface RootRoom extends Room {
    readonly name: "root";
    /** Resolve once the connection's root join_ack arrived (at once if open). */
    ready(timeoutMs?: number): Promise<this>;
    /** Disconnect for good: every room closes and reconnecting stops. */
    close(code?: number, reason?: string): this;
    /** Leave every room but the root. */
    purge(): this;
    /** The joined rooms by name, the root included. */
    rooms(): Readonly<Record<string, Room>>;
    /** Whether the current connection uses the `trioroom.v1` extension. */
    extended(): boolean;
    /** Where the connection is; a `state` event tells each change. */
    readonly state: ConnectionState;

    on(event: "open", listener: (this: RootRoom) => void): this;
    on(event: "close", listener: (this: RootRoom, info: CloseInfo) => void): this;
    on(event: "new_member" | "member_left", listener: (this: RootRoom, memberId: string) => void): this;
    on(event: "error", listener: (this: RootRoom, error: Error) => void): this;
    on(event: "state", listener: (this: RootRoom, state: ConnectionState, previous: ConnectionState) => void): this;
    on(event: "reconnecting", listener: (this: RootRoom, attempt: number, delayMs: number) => void): this;
    on(event: "reconnect_failed", listener: (this: RootRoom, attempts: number) => void): this;
    on(event: "resumed", listener: (this: RootRoom, replayed: number) => void): this;
    on(event: "resume_failed", listener: (this: RootRoom, reason: ResumeFailure) => void): this;
    on(event: string, listener: MessageListener): this;
    addListener(event: "open", listener: (this: RootRoom) => void): this;
    addListener(event: "close", listener: (this: RootRoom, info: CloseInfo) => void): this;
    addListener(event: "new_member" | "member_left", listener: (this: RootRoom, memberId: string) => void): this;
    addListener(event: "error", listener: (this: RootRoom, error: Error) => void): this;
    addListener(event: "state", listener: (this: RootRoom, state: ConnectionState, previous: ConnectionState) => void): this;
    addListener(event: "reconnecting", listener: (this: RootRoom, attempt: number, delayMs: number) => void): this;
    addListener(event: "reconnect_failed", listener: (this: RootRoom, attempts: number) => void): this;
    addListener(event: "resumed", listener: (this: RootRoom, replayed: number) => void): this;
    addListener(event: "resume_failed", listener: (this: RootRoom, reason: ResumeFailure) => void): this;
    addListener(event: string, listener: MessageListener): this;
    once(event: "open", listener: (this: RootRoom) => void): this;
    once(event: "close", listener: (this: RootRoom, info: CloseInfo) => void): this;
    once(event: "new_member" | "member_left", listener: (this: RootRoom, memberId: string) => void): this;
    once(event: "error", listener: (this: RootRoom, error: Error) => void): this;
    once(event: "state", listener: (this: RootRoom, state: ConnectionState, previous: ConnectionState) => void): this;
    once(event: "reconnecting", listener: (this: RootRoom, attempt: number, delayMs: number) => void): this;
    once(event: "reconnect_failed", listener: (this: RootRoom, attempts: number) => void): this;
    once(event: "resumed", listener: (this: RootRoom, replayed: number) => void): this;
    once(event: "resume_failed", listener: (this: RootRoom, reason: ResumeFailure) => void): this;
    once(event: string, listener: MessageListener): this;
}

/** Returns the URL to connect to; called before every attempt (e.g. to renew a token in the query string). */
export type UrlFunction = () => string | URL | PromiseLike<string | URL>;

/** Connect to a trioroom (or wsrooms) server and return the root room. */
export declare function trioroom(url: string | URL | UrlFunction, options?: TrioroomOptions): RootRoom;
export default trioroom;
