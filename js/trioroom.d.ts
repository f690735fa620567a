import type { ReconnectOptions } from "./backoff.js";
import type { Frame, Payload } from "./codec.js";
import type { Listener } from "./emitter.js";

export { FrameError, RESERVED_EVENTS, ROOT_ROOM } from "./codec.js";
export type { Frame, Payload, ReservedEvent } from "./codec.js";
export { json, text } from "./utf8.js";
export type { ReconnectOptions } from "./backoff.js";

/** Events only the client emits; never sent or accepted on the wire. */
export type LocalEvent = "open" | "close" | "error" | "reconnecting" | "reconnect_failed";
export declare const LOCAL_EVENTS: readonly LocalEvent[];
/** Names `send` refuses: the protocol's reserved ones and the local ones. */
export declare const REFUSED_EVENTS: readonly string[];

/** The server broke the protocol (e.g. sent an event only clients send). */
export declare class ProtocolError extends Error {
    constructor(message: string, frame?: Frame);
    readonly name: "ProtocolError";
    readonly frame?: Frame;
}

/** `ready(timeout)` or `joined(timeout)` ran out of time. */
export declare class TimeoutError extends Error {
    constructor(message: string);
    readonly name: "TimeoutError";
}

/** A WebSocket constructor: the browser's, or `WebSocket` from the `ws` package on Node. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => unknown;

export interface TrioroomOptions extends ReconnectOptions {
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
    /** Whether the room is joined and the connection is up. */
    open(): boolean;
    /** A copy of the member IDs, this client's included. */
    members(): string[];
    /** This client's ID ("" while the room is not open). */
    id(): string;
    /** Resolve with the room once it is open; reject if it is left, the client closes, or the timeout passes. */
    joined(timeoutMs?: number): Promise<this>;

    on(event: "open" | "close", listener: (this: Room) => void): this;
    on(event: "new_member" | "member_left", listener: (this: Room, memberId: string) => void): this;
    on(event: "error", listener: (this: Room, error: Error) => void): this;
    on(event: string, listener: MessageListener): this;
    addListener(event: "open" | "close", listener: (this: Room) => void): this;
    addListener(event: "new_member" | "member_left", listener: (this: Room, memberId: string) => void): this;
    addListener(event: "error", listener: (this: Room, error: Error) => void): this;
    addListener(event: string, listener: MessageListener): this;
    once(event: "open" | "close", listener: (this: Room) => void): this;
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

    on(event: "open" | "close", listener: (this: Room) => void): this;
    on(event: "new_member" | "member_left", listener: (this: Room, memberId: string) => void): this;
    on(event: "error", listener: (this: Room, error: Error) => void): this;
    on(event: "reconnecting", listener: (this: Room, attempt: number, delayMs: number) => void): this;
    on(event: "reconnect_failed", listener: (this: Room, attempts: number) => void): this;
    on(event: string, listener: MessageListener): this;
    once(event: "open" | "close", listener: (this: Room) => void): this;
    once(event: "new_member" | "member_left", listener: (this: Room, memberId: string) => void): this;
    once(event: "error", listener: (this: Room, error: Error) => void): this;
    once(event: "reconnecting", listener: (this: Room, attempt: number, delayMs: number) => void): this;
    once(event: "reconnect_failed", listener: (this: Room, attempts: number) => void): this;
    once(event: string, listener: MessageListener): this;
}

/** Connect to a trioroom (or wsrooms) server and return the root room. */
export declare function trioroom(url: string | URL, options?: TrioroomOptions): RootRoom;
export default trioroom;
