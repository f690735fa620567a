/** Bytes as the client accepts them. */
export type BinaryLike = ArrayBuffer | SharedArrayBuffer | ArrayBufferView;

/** Raised by strict decoding when bytes are not valid UTF-8. */
export declare class Utf8Error extends Error {
    constructor(message: string, offset: number);
    readonly name: "Utf8Error";
    /** Byte offset of the first invalid byte. */
    readonly offset: number;
}

/** Encode a string as UTF-8 (lone surrogates become U+FFFD). */
export declare function encodeUtf8(string: string): Uint8Array;

/**
 * Decode UTF-8 like `new TextDecoder("utf-8", {ignoreBOM: true})`, without
 * needing TextDecoder. With `fatal`, throws {@link Utf8Error} on invalid bytes.
 */
export declare function decodeUtf8(bytes: BinaryLike, options?: { fatal?: boolean }): string;

/** Read a payload as text: strings unchanged, bytes UTF-8 decoded (U+FFFD for invalid bytes). */
export declare function text(payload: string | BinaryLike | null | undefined): string;

/** Read a payload as JSON: UTF-8 decode, then `JSON.parse`. */
export declare function json<T = any>(payload: string | BinaryLike): T;

/** View binary data as a Uint8Array over the same memory. */
export declare function toUint8Array(value: BinaryLike): Uint8Array;

/** True for ArrayBuffer and SharedArrayBuffer, also from another realm. */
export declare function isArrayBuffer(value: unknown): value is ArrayBuffer | SharedArrayBuffer;

/** A short description of a value's type, for error messages. */
export declare function describe(value: unknown): string;
