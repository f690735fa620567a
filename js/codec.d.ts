import type { BinaryLike } from "./utf8.js";

/** A payload as applications give it: text (sent as UTF-8) or bytes; nothing means empty. */
export type Payload = string | BinaryLike | null | undefined;

/** A frame to encode. Missing string fields are empty. */
export interface FrameInput {
    room: string;
    event: string;
    dst?: string;
    src?: string;
    payload?: Payload;
}

/** A decoded frame. The payload is a copy of the received bytes. */
export interface Frame {
    room: string;
    event: string;
    dst: string;
    src: string;
    payload: Uint8Array;
}

/** The protocol's reserved event names. */
export type ReservedEvent =
    | "open"
    | "close"
    | "join"
    | "join_ack"
    | "leave"
    | "leave_ack"
    | "new_member"
    | "member_left";

export declare const HEADER_SIZE: 4;
export declare const MIN_FRAME_SIZE: 20;
export declare const MAX_FIELD_SIZE: 4294967295;
export declare const ROOT_ROOM: "root";
export declare const RESERVED_EVENTS: readonly ReservedEvent[];

/** Bytes that are not one well-formed frame (or a malformed member payload). */
export declare class FrameError extends Error {
    constructor(reason: string, offset: number);
    readonly name: "FrameError";
    /** What is wrong. */
    readonly reason: string;
    /** At which byte. */
    readonly offset: number;
    /** The frame concerned, when the client reports a bad payload of a decoded frame. */
    frame?: Frame;
}

/** Turn a payload into bytes (strings as UTF-8, binary values as views). */
export declare function payloadBytes(payload: Payload): Uint8Array;

/** Encode one frame. */
export declare function encodeFrame(frame: FrameInput): Uint8Array;

/** Decode one complete frame strictly; throws {@link FrameError}. */
export declare function decodeFrame(data: BinaryLike): Frame;

/** Parse a `join_ack` payload (JSON array of strings), dropping duplicates; throws {@link FrameError}. */
export declare function parseMemberList(payload: BinaryLike): string[];

/** Parse a `new_member`/`member_left` payload (non-empty UTF-8); throws {@link FrameError}. */
export declare function parseMemberId(payload: BinaryLike): string;
