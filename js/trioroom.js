/**
 * trioroom's JavaScript client, for browsers and Node >= 20.
 *
 * Same API as the wsrooms client (`wsrooms(url)` returns the root room;
 * rooms have `join`, `leave`, `send`, `open`, `members`, `id`, `on`), without
 * its bugs, plus automatic reconnection and promise helpers.
 *
 * Against a trioroom server the client also speaks the `trioroom.v1`
 * extension (docs/protocol.md): a dropped connection is resumed with the same
 * ID and rooms and without losing a message, `room.request()` gets the
 * server's answer, and the server's complaints arrive as `error` events.
 * Against a plain wsrooms server it speaks the plain protocol.
 *
 * @module trioroom
 */

import { reconnectDelay, reconnectOptions } from "./backoff.js";
import {
    decodeFrame,
    encodeFrame,
    parseMemberId,
    parseMemberList,
    RESERVED_EVENTS,
    ROOT_ROOM,
} from "./codec.js";
import { createEmitter, rethrowLater } from "./emitter.js";
import { decodeUtf8, describe, encodeUtf8, isArrayBuffer, json, text } from "./utf8.js";

export { FrameError, RESERVED_EVENTS, ROOT_ROOM } from "./codec.js";
export { json, text } from "./utf8.js";

/**
 * Events that only this client emits, never sent on the wire. A frame that
 * arrives with one of these names is refused, so no peer can fake them.
 */
export const LOCAL_EVENTS = Object.freeze([
    "open",
    "close",
    "error",
    "reconnecting",
    "reconnect_failed",
    "resumed",
    "resume_failed",
    "state",
]);

/** The values of `root.state`, in the order a connection usually walks through them. */
export const STATES = Object.freeze(["connecting", "open", "suspended", "reconnecting", "closed"]);

/**
 * Close codes that end the client instead of reconnecting, unless the
 * option `reconnectAfterKick` is true: a kick (4000), a policy violation
 * (1008: rate limit, malformed frames, ...) and a message too big (1009).
 * Coming back at once would only repeat what got the client closed.
 */
export const KICK_CLOSE_CODES = Object.freeze([4000, 1008, 1009]);

/** Event names `send` refuses: the protocol's reserved names and the local ones. */
export const REFUSED_EVENTS = Object.freeze(Array.from(new Set(RESERVED_EVENTS.concat(LOCAL_EVENTS))));

/** The WebSocket subprotocol of the extension. */
export const EXTENSION_PROTOCOL = "trioroom.v1";

/** Events whose names start with this belong to the extension; `send` refuses them. */
export const EXTENSION_PREFIX = "trioroom.";

/** Defaults of the extension's options of {@link trioroom}. */
export const EXTENSION_DEFAULTS = Object.freeze({
    extension: true,
    ackEvery: 64,
    ackInterval: 5000,
    requestTimeout: 30000,
});

/** Defaults of the connection options of {@link trioroom}. */
export const CONNECTION_DEFAULTS = Object.freeze({
    connectTimeout: 10000,
    reconnectResetAfter: 5000,
    reconnectAfterKick: false,
    offlineQueue: false,
});

/** Bounds of the offline queue when `offlineQueue` is `true`. */
export const OFFLINE_QUEUE_DEFAULTS = Object.freeze({ maxMessages: 100, maxBytes: 1024 * 1024 });

const SESSION = "trioroom.session";
const RESUMED = "trioroom.resumed";
const NOT_RESUMED = "trioroom.not_resumed";
const ACK = "trioroom.ack";
const REPLY = "trioroom.reply";
const ERROR = "trioroom.error";
/** Frames about the socket rather than the session: the server does not number them. */
const UNNUMBERED = Object.freeze([SESSION, RESUMED, NOT_RESUMED]);
/**
 * Close codes after which the server keeps an extended session for a
 * resume: no close frame (the network dropped, 1006) and the server's
 * heartbeat or write timeout (1011). Any other code ends the session.
 */
const RESUMABLE_CLOSE_CODES = Object.freeze([1006, 1011]);

// readyState values are fixed by the WebSocket standard; ws and browsers share them.
const WS_OPEN = 1;
const WS_CLOSING = 2;

/**
 * The server did something the protocol does not allow, such as sending an
 * event that only clients send. `frame` is the frame concerned, if any.
 */
export class ProtocolError extends Error {
    /**
     * @param {string} message
     * @param {object} [frame]
     */
    constructor(message, frame) {
        super(message);
        this.name = "ProtocolError";
        this.frame = frame;
    }
}

/**
 * A promise helper (`ready`, `joined`, `request`) ran out of time. Its
 * `code` is `"timeout"`, like the server's own request timeouts.
 */
export class TimeoutError extends Error {
    constructor(message) {
        super(message);
        this.name = "TimeoutError";
        this.code = "timeout";
    }
}

/**
 * What the server reported with a `trioroom.error` frame: the rejection of a
 * `request()`, a refused join, a rate limit, ... `code` is the server's code
 * (`join_refused`, `rate_limited`, `message_too_big`, `malformed`,
 * `not_a_member`, `unknown_destination`, `handler_error`, `timeout`,
 * `backplane_unavailable`, or a handler's own), `event` the event concerned,
 * `room` the frame's room.
 */
export class ServerError extends Error {
    /**
     * @param {string} code
     * @param {string} message
     * @param {{event?: string, room?: string, frame?: object}} [details]
     */
    constructor(code, message, details = {}) {
        super(message);
        this.name = "ServerError";
        this.code = code;
        this.event = details.event === undefined ? "" : details.event;
        this.room = details.room === undefined ? "" : details.room;
        this.frame = details.frame;
    }
}

/**
 * A `request()` that the client could not complete: `code` is `not_open`
 * (the room is not open), `unsupported` (the connection does not use the
 * extension), `disconnected` (the connection was lost for good before the
 * answer) or `closed` (the client was closed).
 */
export class RequestError extends Error {
    /**
     * @param {string} code
     * @param {string} message
     * @param {{event?: string, room?: string}} [details]
     */
    constructor(code, message, details = {}) {
        super(message);
        this.name = "RequestError";
        this.code = code;
        this.event = details.event === undefined ? "" : details.event;
        this.room = details.room === undefined ? "" : details.room;
    }
}

/**
 * The answer to a `request()`: the reply's payload bytes, with helpers to
 * read them.
 */
export class Reply extends Uint8Array {
    /** The payload as UTF-8 text. */
    text() {
        return text(this);
    }

    /** The payload as JSON. */
    json() {
        return json(this);
    }
}

/**
 * Connect to a trioroom (or wsrooms) server and return the root room.
 *
 * The connection opens in the background: wait for the root's `open` event
 * or `await root.ready()` before sending. Rooms can be joined at once; the
 * `join` goes out when the root is open.
 *
 * @param {string | URL | (() => string | URL | Promise<string | URL>)} url e.g. `"ws://127.0.0.1:8080/ws"`,
 *     or a function returning it (or a promise of it), called before every attempt: a
 *     token in the query string can be renewed (the resume parameters are added to its result)
 * @param {object} [options]
 * @param {Function} [options.WebSocket] WebSocket constructor; default `globalThis.WebSocket`
 *     (Node 20 has none: pass `WebSocket` from the `ws` package)
 * @param {string | string[]} [options.protocols] subprotocols for the WebSocket handshake
 * @param {boolean} [options.extension=true] offer the `trioroom.v1` extension; false speaks the plain protocol only
 * @param {number} [options.ackEvery=64] acknowledge after this many frames (extension)
 * @param {number} [options.ackInterval=5000] and at least this often, ms (extension)
 * @param {number} [options.requestTimeout=30000] default timeout of `request()`, ms (the server's is 30 s)
 * @param {number} [options.connectTimeout=10000] each attempt must open the root (or resume) within this, ms
 * @param {number} [options.reconnectResetAfter=5000] the attempt count starts over once a
 *     connection has stayed open this long, ms
 * @param {boolean} [options.reconnectAfterKick=false] reconnect after a kick (4000) or a
 *     policy close (1008, 1009) too; by default these end the client
 * @param {boolean | {maxMessages?: number, maxBytes?: number}} [options.offlineQueue=false]
 *     keep `send` and `request` calls made while (re)connecting and send them in order
 *     once open; bounded (true: 100 messages, 1 MiB), a call over the bound throws
 * @param {boolean} [options.reconnect=true] reconnect after the connection drops
 * @param {number} [options.reconnectDelay=500] ms before the first reconnect attempt
 * @param {number} [options.reconnectMaxDelay=10000] ceiling of the doubling delay, ms
 * @param {number} [options.reconnectJitter=0.5] share (0..1) of the delay taken off at random
 * @param {number} [options.maxReconnectAttempts=Infinity] consecutive failed attempts before giving up
 * @returns {import("./trioroom.js").RootRoom}
 * @throws {TypeError} for a bad argument or when no WebSocket implementation is available
 */
export function trioroom(url, options = {}) {
    if (typeof url !== "function" && !isUrl(url)) {
        throw new TypeError("url must be a string, a URL or a function returning one, got " + describe(url));
    }
    if (options === null || typeof options !== "object") {
        throw new TypeError("options must be an object, got " + describe(options));
    }
    const WebSocketImpl = options.WebSocket === undefined ? globalThis.WebSocket : options.WebSocket;
    if (typeof WebSocketImpl !== "function") {
        throw new TypeError(
            "no WebSocket implementation: pass options.WebSocket " +
                "(on Node 20: import { WebSocket } from \"ws\")",
        );
    }
    const extension = extensionOptions(options);
    const protocols = handshakeProtocols(options.protocols, extension.extension);
    const settings = Object.assign(reconnectOptions(options), connectionOptions(options));
    return createClient(typeof url === "function" ? url : String(url), WebSocketImpl, protocols, settings, extension);
}

function isUrl(value) {
    return typeof value === "string" || (typeof URL === "function" && value instanceof URL);
}

/** Check and complete the connection options. */
function connectionOptions(options) {
    const merged = Object.assign({}, CONNECTION_DEFAULTS);
    Object.keys(CONNECTION_DEFAULTS).forEach(function (name) {
        if (options[name] !== undefined) {
            merged[name] = options[name];
        }
    });
    checkTimeout(merged.connectTimeout, "option connectTimeout");
    checkTimeout(merged.reconnectResetAfter, "option reconnectResetAfter");
    if (typeof merged.reconnectAfterKick !== "boolean") {
        throw new TypeError("option reconnectAfterKick must be a boolean");
    }
    const queue = merged.offlineQueue;
    if (queue === false) {
        merged.offlineQueue = null;
    } else if (queue === true) {
        merged.offlineQueue = Object.assign({}, OFFLINE_QUEUE_DEFAULTS);
    } else if (queue !== null && typeof queue === "object") {
        const bounds = Object.assign({}, OFFLINE_QUEUE_DEFAULTS);
        ["maxMessages", "maxBytes"].forEach(function (name) {
            if (queue[name] !== undefined) {
                if (!(Number.isInteger(queue[name]) && queue[name] >= 1)) {
                    throw new RangeError("option offlineQueue." + name + " must be an integer >= 1");
                }
                bounds[name] = queue[name];
            }
        });
        merged.offlineQueue = bounds;
    } else {
        throw new TypeError("option offlineQueue must be a boolean or {maxMessages, maxBytes}, got " + describe(queue));
    }
    return merged;
}

/**
 * Whether `value` is well-formed UTF-16 (no lone surrogate): only such a
 * string has a UTF-8 encoding; the encoder would put U+FFFD in its place.
 */
function isWellFormed(value) {
    if (typeof value.isWellFormed === "function") {
        return value.isWellFormed();
    }
    return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value);
}

function checkWellFormed(value, what) {
    if (!isWellFormed(value)) {
        throw new TypeError(what + " " + JSON.stringify(value) + " is not well-formed UTF-16 (it has a lone surrogate)");
    }
}

export default trioroom;

/** Check and complete the extension's options. */
function extensionOptions(options) {
    const merged = Object.assign({}, EXTENSION_DEFAULTS);
    Object.keys(EXTENSION_DEFAULTS).forEach(function (name) {
        if (options[name] !== undefined) {
            merged[name] = options[name];
        }
    });
    if (typeof merged.extension !== "boolean") {
        throw new TypeError("option extension must be a boolean");
    }
    if (!(Number.isInteger(merged.ackEvery) && merged.ackEvery >= 1)) {
        throw new RangeError("option ackEvery must be an integer >= 1");
    }
    if (typeof merged.ackInterval !== "number" || !(merged.ackInterval > 0)) {
        throw new RangeError("option ackInterval must be a number of milliseconds > 0 (Infinity: no timer)");
    }
    checkTimeout(merged.requestTimeout, "option requestTimeout");
    return merged;
}

function checkTimeout(value, what) {
    if (typeof value !== "number" || !(value >= 0)) {
        throw new RangeError(what + " must be a number of milliseconds >= 0 (Infinity: none)");
    }
}

/** The subprotocols to offer: the caller's, plus the extension's unless it is off. */
function handshakeProtocols(protocols, extension) {
    if (protocols !== undefined && typeof protocols !== "string" && !Array.isArray(protocols)) {
        throw new TypeError("option protocols must be a string or an array of strings, got " + describe(protocols));
    }
    const offered = protocols === undefined ? [] : [].concat(protocols);
    if (!extension) {
        if (offered.includes(EXTENSION_PROTOCOL)) {
            throw new TypeError("option protocols offers " + EXTENSION_PROTOCOL + " but option extension is false");
        }
        // Exactly what the caller gave: the plain client's handshake.
        return protocols;
    }
    if (!offered.includes(EXTENSION_PROTOCOL)) {
        offered.push(EXTENSION_PROTOCOL);
    }
    return offered;
}

/**
 * `url` with `resume=<token>&last=<count>` in its query, every other
 * parameter kept as it was (an earlier `resume` or `last` is replaced).
 */
export function resumeUrl(url, token, last) {
    const hashAt = url.indexOf("#");
    const base = hashAt === -1 ? url : url.slice(0, hashAt);
    const queryAt = base.indexOf("?");
    const path = queryAt === -1 ? base : base.slice(0, queryAt);
    const kept = queryAt === -1
        ? []
        : base.slice(queryAt + 1).split("&").filter(function (part) {
            const key = part.split("=")[0];
            return part !== "" && key !== "resume" && key !== "last";
        });
    kept.push("resume=" + encodeURIComponent(token), "last=" + String(last));
    return path + "?" + kept.join("&");
}

/**
 * All the state of one connection. Nothing is shared between clients.
 */
function createClient(url, WebSocketImpl, protocols, settings, ext) {
    /** Registered rooms by name; the root is always there. */
    const rooms = new Map();
    let socket = null;
    // Counts server-side connections: a room knows whether its join went out
    // on the current one. A resumed session keeps its epoch.
    let epoch = 0;
    let clientId = "";
    let failedAttempts = 0;
    let reconnectTimer = null;
    let closedError = null;
    /** What `root.state` says; see STATES. */
    let clientState = "connecting";
    let everOpened = false;
    /** Counts connection attempts: the timers and URL promises of an older one are ignored. */
    let attempt = 0;
    /** The connect timeout of the current attempt. */
    let attemptTimer = null;
    /** Starts the attempt count over once the connection has stayed up. */
    let stableTimer = null;
    /** Counts sockets: a request knows on which one it went out. */
    let socketGeneration = 0;
    /** The offline queue: {state, bytes, request} in call order, and its size in bytes. */
    const queue = [];
    let queuedBytes = 0;
    /** Messages of errors already reported on the console (no `error` listener). */
    const reportedErrors = new Set();

    // The trioroom.v1 extension.
    /** The current socket negotiated the extension. */
    let extended = false;
    /** The resumable session: {token, resumeWindow, id}, or null. */
    let session = null;
    /** Numbered frames received on the session, and the count last acknowledged. */
    let received = 0;
    let acked = 0;
    let ackTimer = null;
    /** The socket dropped; the session waits for a resume (the current socket, if any, asks for it). */
    let suspended = false;
    /** Ends the suspension once the session's resume_window has passed. */
    let resumeTimer = null;
    /** How the socket of the suspended session closed: {code, reason}. */
    let lostWith = null;
    /** After a resume, the probe is out: the offline queue waits for its answer. */
    let awaitingProbe = false;
    let lastRef = 0;
    /** Requests waiting for their answer, by ref. */
    const requests = new Map();

    const rootState = createRoom(ROOT_ROOM);
    openSocket({ throwOnFailure: true });
    return rootState.room;

    /** The socket is open and the session usable: frames can be sent. */
    function connected() {
        return socket !== null && socket.readyState === WS_OPEN && !suspended;
    }

    function openSocket({ throwOnFailure }) {
        attempt += 1;
        const current = attempt;
        startAttemptTimer(current);
        if (typeof url !== "function") {
            connectTo(url, throwOnFailure);
            return;
        }
        let produced;
        try {
            produced = url();
        } catch (error) {
            attemptFailed(asError(error, "the URL function threw"));
            return;
        }
        if (produced !== null && typeof produced === "object" && typeof produced.then === "function") {
            Promise.resolve(produced).then(
                function (value) {
                    if (current === attempt && closedError === null) {
                        connectTo(value, false);
                    }
                },
                function (error) {
                    if (current === attempt && closedError === null) {
                        attemptFailed(asError(error, "the URL function's promise was rejected"));
                    }
                },
            );
            return;
        }
        connectTo(produced, false);
    }

    function asError(value, what) {
        return value instanceof Error ? value : new Error(what + ": " + describe(value), { cause: value });
    }

    function connectTo(address, throwOnFailure) {
        if (!isUrl(address)) {
            attemptFailed(new TypeError("the URL function must return a string or a URL, got " + describe(address)));
            return;
        }
        const resume = suspended && session !== null;
        const target = resume ? resumeUrl(String(address), session.token, received) : String(address);
        let candidate;
        try {
            candidate = protocols === undefined ? new WebSocketImpl(target) : new WebSocketImpl(target, protocols);
        } catch (error) {
            // A bad URL is the caller's mistake: say so at once rather than retry forever.
            if (throwOnFailure) {
                clearAttemptTimer();
                throw error;
            }
            attemptFailed(error);
            return;
        }
        if (!resume) {
            epoch += 1;
        }
        socketGeneration += 1;
        socket = candidate;
        extended = false;
        candidate.binaryType = "arraybuffer";
        const isCurrent = () => socket === candidate;
        candidate.addEventListener("open", function () {
            if (isCurrent()) {
                onSocketOpen(candidate);
            }
        });
        candidate.addEventListener("message", function (event) {
            if (isCurrent()) {
                onMessage(event.data);
            }
        });
        candidate.addEventListener("close", function (event) {
            if (isCurrent()) {
                const code = event !== null && typeof event === "object" && typeof event.code === "number" ? event.code : 1006;
                const reason = event !== null && typeof event === "object" && typeof event.reason === "string" ? event.reason : "";
                handleClose(code, reason);
            }
        });
        candidate.addEventListener("error", function (event) {
            if (isCurrent()) {
                const detail = event && typeof event.message === "string" && event.message !== ""
                    ? ": " + event.message
                    : "";
                reportError(rootState, new Error("WebSocket error" + detail, { cause: event }));
            }
        });
    }

    /** Every attempt must open the root, or resume, within `connectTimeout`. */
    function startAttemptTimer(current) {
        clearAttemptTimer();
        if (settings.connectTimeout === Infinity) {
            return;
        }
        attemptTimer = setTimeout(function () {
            attemptTimer = null;
            if (current === attempt && closedError === null) {
                attemptFailed(new TimeoutError(
                    "no connection within " + settings.connectTimeout + " ms (option connectTimeout)",
                ));
            }
        }, settings.connectTimeout);
    }

    function clearAttemptTimer() {
        if (attemptTimer !== null) {
            clearTimeout(attemptTimer);
            attemptTimer = null;
        }
    }

    /** Drop the current socket, if any, without waiting for it. */
    function abandonSocket() {
        const abandoned = socket;
        socket = null;
        extended = false;
        if (abandoned !== null && abandoned.readyState < WS_CLOSING) {
            try {
                // ws can drop a socket without a close frame, which would end a resumable session.
                if (typeof abandoned.terminate === "function") {
                    abandoned.terminate();
                } else {
                    abandoned.close();
                }
            } catch {
                // Already gone.
            }
        }
    }

    /** The current attempt failed before the root opened: as if its socket dropped. */
    function attemptFailed(error) {
        attempt += 1;
        abandonSocket();
        reportError(rootState, error);
        handleClose(1006, error.message);
    }

    function onSocketOpen(candidate) {
        extended = ext.extension && candidate.protocol === EXTENSION_PROTOCOL;
        if (suspended && !extended) {
            // The server no longer speaks the extension: this is a fresh plain connection.
            endSession("unsupported");
        }
    }

    function onMessage(data) {
        let bytes;
        if (typeof data === "string") {
            // A text frame: read its bytes like a binary frame, as the server does.
            bytes = encodeUtf8(data);
        } else if (ArrayBuffer.isView(data) || isArrayBuffer(data)) {
            bytes = data;
        } else {
            countFrame();
            reportError(
                rootState,
                new TypeError("cannot read a message of type " + describe(data) + "; binaryType must be \"arraybuffer\""),
            );
            return;
        }
        let frame;
        try {
            frame = decodeFrame(bytes);
        } catch (error) {
            // The server numbered it all the same.
            countFrame();
            reportError(rootState, error);
            return;
        }
        // Only the server sends frames with an empty src; a peer's always carry its ID.
        const fromServer = extended && frame.src === "";
        const unnumbered = fromServer && UNNUMBERED.includes(frame.event);
        if (suspended) {
            // The first frame of a resume attempt answers it.
            if (unnumbered && frame.event === RESUMED) {
                onResumed(frame);
                return;
            }
            if (unnumbered && frame.event === NOT_RESUMED) {
                onNotResumed(frame);
                return;
            }
            reportError(rootState, new ProtocolError("the server did not answer the resume request", frame));
            endSession("unanswered");
        }
        if (unnumbered) {
            if (frame.event === SESSION) {
                onSession(frame);
            } else {
                reportError(rootState, new ProtocolError("unexpected '" + frame.event + "'", frame));
            }
            return;
        }
        countFrame();
        if (fromServer && frame.event.startsWith(EXTENSION_PREFIX)) {
            onExtensionEvent(frame);
            return;
        }
        const state = rooms.get(frame.room);
        // The protocol drops frames for rooms this client has no object for.
        if (state !== undefined) {
            handleFrame(state, frame);
        }
    }

    function handleFrame(state, frame) {
        switch (frame.event) {
            case "join_ack":
                onJoinAck(state, frame);
                break;
            case "new_member":
                onMemberChange(state, frame, true);
                break;
            case "member_left":
                onMemberChange(state, frame, false);
                break;
            case "leave_ack":
                onLeaveAck(state);
                break;
            default:
                if (REFUSED_EVENTS.includes(frame.event) || frame.event.startsWith(EXTENSION_PREFIX)) {
                    reportError(
                        state,
                        new ProtocolError("received event '" + frame.event + "', which clients never receive", frame),
                    );
                    return;
                }
                state.emitter.emit(frame.event, frame.payload, frame.src, frame);
        }
    }

    function onJoinAck(state, frame) {
        let members;
        try {
            members = parseMemberList(frame.payload);
        } catch (error) {
            error.frame = frame;
            reportError(state, error);
            return;
        }
        if (frame.src === "") {
            reportError(state, new ProtocolError("join_ack for room '" + state.name + "' has an empty src", frame));
            return;
        }
        state.joinPending = false;
        if (state === rootState) {
            clientId = frame.src;
        }
        // A leave is on its way; its leave_ack closes the room.
        if (!state.wanted) {
            return;
        }
        state.id = frame.src;
        const wasOpen = state.isOpen;
        // An open room's join_ack answers a repeated join (e.g. sent again after
        // a resume): the server lists the joiner alone then, and the list kept
        // from new_member/member_left is the right one.
        state.members = wasOpen ? mergeMembers(state.members, members) : members;
        state.isOpen = true;
        if (state === rootState) {
            connectionUp();
            rooms.forEach(sendJoinIfConnected);
            // After the joins: the server handles frames in order.
            flushQueue();
        }
        if (!wasOpen) {
            state.emitter.emit("open");
        }
        settleWaiters(state, null);
    }

    function mergeMembers(current, listed) {
        const known = new Set(current);
        return current.concat(listed.filter((id) => !known.has(id)));
    }

    function onMemberChange(state, frame, joined) {
        if (!state.isOpen) {
            return;
        }
        let memberId;
        try {
            memberId = parseMemberId(frame.payload);
        } catch (error) {
            error.frame = frame;
            reportError(state, error);
            return;
        }
        const index = state.members.indexOf(memberId);
        if (joined && index === -1) {
            state.members.push(memberId);
            state.emitter.emit("new_member", memberId);
        } else if (!joined && index !== -1) {
            state.members.splice(index, 1);
            state.emitter.emit("member_left", memberId);
        }
    }

    function onLeaveAck(state) {
        if (state.pendingLeaves > 0) {
            state.pendingLeaves -= 1;
            // Joined again after this leave: the next join_ack reopens the room.
            if (state.wanted) {
                // The server forgot our membership: the coming list replaces this one.
                state.members = [];
                return;
            }
        }
        if (state === rootState) {
            // Only a server that removed us from root sends this; the connection is useless then.
            if (socket !== null && socket.readyState < WS_CLOSING) {
                socket.close(1000, "");
            }
            return;
        }
        finalizeLeft(state, new Error("left room '" + state.name + "'"));
    }

    // -- the trioroom.v1 extension -----------------------------------------------

    /** One more numbered frame of the session; acknowledge every `ackEvery`. */
    function countFrame() {
        if (session === null || suspended) {
            return;
        }
        received += 1;
        if (received - acked >= ext.ackEvery) {
            sendAck();
        }
    }

    function sendAck() {
        if (session !== null && extended && connected() && received > acked) {
            acked = received;
            sendFrame({ room: ROOT_ROOM, event: ACK, dst: "", src: "", payload: String(received) });
        }
    }

    function startAckTimer() {
        stopAckTimer();
        if (ext.ackInterval !== Infinity) {
            ackTimer = setInterval(sendAck, ext.ackInterval);
            // The socket keeps a Node process alive, not this timer.
            if (typeof ackTimer === "object" && ackTimer !== null && typeof ackTimer.unref === "function") {
                ackTimer.unref();
            }
        }
    }

    function stopAckTimer() {
        if (ackTimer !== null) {
            clearInterval(ackTimer);
            ackTimer = null;
        }
    }

    function readJson(frame) {
        try {
            const body = JSON.parse(decodeUtf8(frame.payload, { fatal: true }));
            if (body !== null && typeof body === "object" && !Array.isArray(body)) {
                return body;
            }
        } catch {
            // Reported below.
        }
        reportError(rootState, new ProtocolError("'" + frame.event + "' carries no JSON object", frame));
        return null;
    }

    function onSession(frame) {
        const body = readJson(frame);
        if (body === null) {
            return;
        }
        if (typeof body.token !== "string" || body.token === "") {
            reportError(rootState, new ProtocolError("trioroom.session without a token", frame));
            return;
        }
        session = {
            token: body.token,
            resumeWindow: typeof body.resume_window === "number" ? body.resume_window : 0,
            id: typeof body.id === "string" ? body.id : "",
        };
        received = 0;
        acked = 0;
        startAckTimer();
    }

    function onResumed(frame) {
        const body = readJson(frame) || {};
        const replayed = typeof body.replayed === "number" ? body.replayed : 0;
        suspended = false;
        stopResumeTimer();
        connectionUp();
        // The server took `last` as an acknowledgement.
        acked = received;
        startAckTimer();
        // Frames sent just before the drop may be lost: joins and leaves in
        // flight go again (the server treats a repeated one as a no-op).
        rooms.forEach(function (state) {
            if (state === rootState) {
                return;
            }
            if (state.wanted) {
                if (!state.isOpen || state.joinPending || state.pendingLeaves > 0) {
                    state.joinGeneration = 0;
                    sendJoinIfConnected(state);
                }
            } else if (state.leaveDeferred || state.pendingLeaves > 0) {
                state.leaveDeferred = false;
                sendLeave(state);
            }
        });
        sendProbe();
        if (!awaitingProbe) {
            flushQueue();
        }
        rootState.emitter.emit("resumed", replayed);
        rooms.forEach(function (state) {
            if (state.isOpen && state.wanted) {
                settleWaiters(state, null);
            }
        });
    }

    function onNotResumed(frame) {
        const body = readJson(frame) || {};
        const reason = typeof body.reason === "string" ? body.reason : "unknown";
        if (reason === "kicked" && !settings.reconnectAfterKick) {
            // Removed by the server while away: do not come back as someone new.
            const closing = socket;
            socket = null;
            if (closing !== null && closing.readyState < WS_CLOSING) {
                closing.close(1000, "");
            }
            rootState.emitter.emit("resume_failed", reason);
            rejectRequests("disconnected", "the session was kicked before the answer");
            shutdown(new Error("kicked by the server while disconnected"), {
                code: 4000,
                reason: "kicked while disconnected",
                willReconnect: false,
            });
            return;
        }
        endSession(reason);
    }

    /**
     * After a resume: requests written on the lost socket may not have
     * reached the server. It answers in order, and what it sent before the
     * resume comes first, so once this probe (a request to leave the room
     * "", which no client is in) is answered, a request still unanswered
     * was never received: it goes again, once. As in the Python client.
     */
    function sendProbe() {
        requests.forEach(function (pending, ref) {
            if (pending.kind === "probe") {
                requests.delete(ref);
            }
        });
        awaitingProbe = false;
        const missed = Array.from(requests.values()).some(function (pending) {
            return pending.written !== null && pending.written < socketGeneration;
        });
        if (!missed) {
            return;
        }
        const ref = String(++lastRef);
        requests.set(ref, { kind: "probe", generation: socketGeneration, timer: null });
        awaitingProbe = true;
        sendFrame({ room: "", event: "leave", dst: "", src: "?" + ref, payload: "" });
    }

    function onProbeAnswered(probe) {
        awaitingProbe = false;
        requests.forEach(function (pending) {
            if (pending.kind === "request" && pending.written !== null && pending.written < probe.generation) {
                pending.written = socketGeneration;
                socket.send(pending.bytes);
            }
        });
        flushQueue();
    }

    /**
     * The suspended session cannot be resumed: say why, and close the rooms
     * as after a plain disconnect. The fresh connection then opens the root
     * and joins the rooms again.
     */
    function endSession(reason) {
        suspended = false;
        stopResumeTimer();
        session = null;
        received = 0;
        acked = 0;
        epoch += 1;
        const lost = lostWith === null ? { code: 1006, reason: "" } : lostWith;
        lostWith = null;
        setState(everOpened ? "reconnecting" : "connecting");
        rootState.emitter.emit("resume_failed", reason);
        connectionLost({ code: lost.code, reason: lost.reason, willReconnect: true });
    }

    /** A `trioroom.reply` or `trioroom.error` from the server. */
    function onExtensionEvent(frame) {
        if (frame.event !== REPLY && frame.event !== ERROR) {
            // A later version's event: nothing for this client.
            return;
        }
        const ref = frame.dst.startsWith("?") ? frame.dst.slice(1) : null;
        const pending = ref === null ? undefined : requests.get(ref);
        if (ref !== null && pending === undefined) {
            // The answer to a request that timed out.
            return;
        }
        if (pending !== undefined) {
            requests.delete(ref);
            if (pending.timer !== null) {
                clearTimeout(pending.timer);
            }
            if (pending.kind === "probe") {
                onProbeAnswered(pending);
                return;
            }
        }
        if (frame.event === REPLY) {
            if (pending !== undefined) {
                pending.resolve(new Reply(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength));
            }
            return;
        }
        const error = serverError(frame);
        if (pending !== undefined) {
            pending.reject(error);
            return;
        }
        const state = rooms.get(frame.room);
        if (
            state !== undefined &&
            state !== rootState &&
            error.event === "join" &&
            error.code === "join_refused" &&
            state.wanted &&
            state.joinPending
        ) {
            // The answer to this room's join: it will not open.
            state.joinPending = false;
            reportError(state, error);
            if (!state.isOpen) {
                finalizeLeft(state, error, { code: 1000, reason: error.code, willReconnect: false });
            }
            return;
        }
        reportError(state === undefined ? rootState : state, error);
    }

    function serverError(frame) {
        let body = null;
        try {
            body = JSON.parse(decodeUtf8(frame.payload, { fatal: true }));
        } catch {
            body = null;
        }
        if (body === null || typeof body !== "object") {
            body = {};
        }
        const code = typeof body.code === "string" && body.code !== "" ? body.code : "unknown";
        const message = typeof body.message === "string" && body.message !== "" ? body.message : "the server reported " + code;
        return new ServerError(code, message, {
            event: typeof body.event === "string" ? body.event : "",
            room: frame.room,
            frame,
        });
    }

    function rejectRequests(code, message) {
        const pending = Array.from(requests.values()).filter((request) => request.kind === "request");
        requests.clear();
        awaitingProbe = false;
        pending.forEach(function (request) {
            if (request.timer !== null) {
                clearTimeout(request.timer);
            }
            request.reject(new RequestError(code, message, { event: request.event, room: request.room }));
        });
    }

    // -- connection state --------------------------------------------------------

    function setState(next) {
        if (next === clientState) {
            return;
        }
        const previous = clientState;
        clientState = next;
        rootState.emitter.emit("state", next, previous);
    }

    /** The root is open (a join_ack or a resume): the attempt succeeded. */
    function connectionUp() {
        clearAttemptTimer();
        everOpened = true;
        stopStableTimer();
        if (failedAttempts > 0) {
            // Not at once: a server that accepts and drops again must not reset the backoff.
            stableTimer = setTimeout(function () {
                stableTimer = null;
                failedAttempts = 0;
            }, settings.reconnectResetAfter);
            unrefTimer(stableTimer);
        }
        setState("open");
    }

    function stopStableTimer() {
        if (stableTimer !== null) {
            clearTimeout(stableTimer);
            stableTimer = null;
        }
    }

    function unrefTimer(timer) {
        // The socket keeps a Node process alive, not this timer.
        if (typeof timer === "object" && timer !== null && typeof timer.unref === "function") {
            timer.unref();
        }
    }

    /** The session waits for a resume no longer than the server keeps it. */
    function startResumeTimer() {
        stopResumeTimer();
        resumeTimer = setTimeout(function () {
            resumeTimer = null;
            if (!suspended || closedError !== null) {
                return;
            }
            // An attempt in progress would ask for a session the server no longer keeps.
            attempt += 1;
            clearAttemptTimer();
            const inProgress = socket !== null;
            abandonSocket();
            endSession("expired");
            if (inProgress || reconnectTimer === null) {
                scheduleReconnect();
            }
        }, session.resumeWindow * 1000);
    }

    function stopResumeTimer() {
        if (resumeTimer !== null) {
            clearTimeout(resumeTimer);
            resumeTimer = null;
        }
    }

    /** The socket closed, or the attempt failed (1006). */
    function handleClose(code, reason) {
        socket = null;
        extended = false;
        stopAckTimer();
        clearAttemptTimer();
        stopStableTimer();
        if (closedError !== null) {
            return;
        }
        const kicked = KICK_CLOSE_CODES.includes(code) && !settings.reconnectAfterKick;
        if (kicked || !settings.reconnect) {
            rejectRequests("disconnected", "the connection was lost before the answer");
            const why = kicked
                ? "the server closed the connection with " + code + (reason === "" ? "" : " (" + reason + ")")
                : "the connection closed and reconnect is off";
            shutdown(new Error(why), { code, reason, willReconnect: false });
            return;
        }
        if (session !== null && session.resumeWindow > 0 && RESUMABLE_CLOSE_CODES.includes(code)) {
            // The server keeps the session for a while: resume it, same ID and rooms.
            if (!suspended) {
                suspended = true;
                lostWith = { code, reason };
                startResumeTimer();
            }
            setState("suspended");
            scheduleReconnect();
            return;
        }
        if (suspended) {
            // Closed on purpose while resuming (e.g. the server is shutting down): the session is over.
            endSession("closed");
        } else {
            session = null;
            setState(everOpened ? "reconnecting" : "connecting");
            connectionLost({ code, reason, willReconnect: failedAttempts < settings.maxReconnectAttempts });
        }
        scheduleReconnect();
    }

    /** The server forgot this connection: every room closes (to be joined again). */
    function connectionLost(info) {
        rejectRequests("disconnected", "the connection was lost before the answer");
        rooms.forEach(function (state) {
            state.pendingLeaves = 0;
            state.joinGeneration = 0;
            state.joinPending = false;
            state.leaveDeferred = false;
        });
        // Rooms first and root last, so the root's close means everything is closed.
        Array.from(rooms.values()).reverse().forEach(function (state) {
            if (!state.wanted) {
                // The server dropped the membership with the connection.
                finalizeLeft(state, new Error("left room '" + state.name + "'"));
            } else {
                markClosed(state, info);
            }
        });
    }

    function scheduleReconnect() {
        if (closedError !== null) {
            return;
        }
        if (failedAttempts >= settings.maxReconnectAttempts) {
            const attempts = failedAttempts;
            shutdown(new Error("gave up reconnecting after " + attempts + " attempts"));
            rootState.emitter.emit("reconnect_failed", attempts);
            return;
        }
        failedAttempts += 1;
        const delay = reconnectDelay(failedAttempts, settings);
        reconnectTimer = setTimeout(function () {
            reconnectTimer = null;
            openSocket({ throwOnFailure: false });
        }, delay);
        rootState.emitter.emit("reconnecting", failedAttempts, delay);
    }

    /**
     * Stop for good: no socket, no reconnect, every room closed (with
     * `info` for its `close` event), every waiter rejected.
     */
    function shutdown(error, info) {
        if (closedError !== null) {
            return;
        }
        closedError = error;
        session = null;
        suspended = false;
        lostWith = null;
        stopAckTimer();
        clearAttemptTimer();
        stopStableTimer();
        stopResumeTimer();
        attempt += 1;
        if (reconnectTimer !== null) {
            clearTimeout(reconnectTimer);
            reconnectTimer = null;
        }
        rejectRequests("closed", error.message);
        dropQueue(error.message);
        setState("closed");
        const closeInfo = info === undefined ? { code: 1006, reason: error.message, willReconnect: false } : info;
        Array.from(rooms.values()).reverse().forEach(function (state) {
            if (state === rootState) {
                markClosed(state, closeInfo);
                settleWaiters(state, error);
            } else {
                finalizeLeft(state, error, closeInfo);
            }
        });
    }

    function markClosed(state, info) {
        const wasOpen = state.isOpen;
        state.isOpen = false;
        state.members = [];
        state.id = "";
        if (wasOpen) {
            state.emitter.emit("close", Object.freeze(Object.assign({}, info)));
        }
    }

    // -- the offline queue --------------------------------------------------------

    /** Whether a `send` or `request` on `state` goes to the offline queue. */
    function queues(state) {
        return (
            settings.offlineQueue !== null &&
            closedError === null &&
            state.wanted &&
            // While (re)connecting, or while older calls wait (a resume's probe): in order.
            (clientState !== "open" || queue.length > 0)
        );
    }

    function enqueue(entry) {
        const bounds = settings.offlineQueue;
        if (queue.length + 1 > bounds.maxMessages || queuedBytes + entry.bytes.byteLength > bounds.maxBytes) {
            throw new RangeError(
                "the offline queue is full (" + queue.length + " messages, " + queuedBytes + " bytes; " +
                    "option offlineQueue allows " + bounds.maxMessages + " messages, " + bounds.maxBytes + " bytes)",
            );
        }
        queue.push(entry);
        queuedBytes += entry.bytes.byteLength;
    }

    function unqueue(entry) {
        const index = queue.indexOf(entry);
        if (index !== -1) {
            queue.splice(index, 1);
            queuedBytes -= entry.bytes.byteLength;
        }
    }

    /** Send what the offline queue holds, in order, once the connection is open. */
    function flushQueue() {
        if (queue.length === 0 || awaitingProbe || !connected()) {
            return;
        }
        const entries = queue.splice(0);
        queuedBytes = 0;
        entries.forEach(function (entry) {
            const pending = entry.request;
            if (!entry.state.wanted) {
                if (pending !== null) {
                    clearTimeout(pending.timer);
                    pending.reject(new RequestError("not_open", "room '" + entry.state.name + "' was left", pending));
                }
                return;
            }
            if (pending !== null) {
                if (!extended) {
                    clearTimeout(pending.timer);
                    pending.reject(new RequestError(
                        "unsupported",
                        "requests need the " + EXTENSION_PROTOCOL + " extension, which this connection does not use",
                        pending,
                    ));
                    return;
                }
                pending.queued = null;
                pending.written = socketGeneration;
                requests.set(pending.ref, pending);
            }
            socket.send(entry.bytes);
        });
    }

    function dropQueue(message) {
        const entries = queue.splice(0);
        queuedBytes = 0;
        entries.forEach(function (entry) {
            if (entry.request !== null) {
                clearTimeout(entry.request.timer);
                entry.request.reject(new RequestError("closed", message, entry.request));
            }
        });
    }

    function finalizeLeft(state, error, info = { code: 1000, reason: "left", willReconnect: false }) {
        state.wanted = false;
        state.pendingLeaves = 0;
        state.joinGeneration = 0;
        state.joinPending = false;
        state.leaveDeferred = false;
        if (rooms.get(state.name) === state) {
            rooms.delete(state.name);
        }
        markClosed(state, info);
        settleWaiters(state, error);
    }

    function sendFrame(frame) {
        socket.send(encodeFrame(frame));
    }

    function sendJoinIfConnected(state) {
        if (
            state === rootState ||
            !state.wanted ||
            !rootState.isOpen ||
            !connected() ||
            state.joinGeneration === epoch
        ) {
            return;
        }
        state.joinGeneration = epoch;
        state.joinPending = true;
        sendFrame({ room: state.name, event: "join", dst: "", src: "", payload: "" });
    }

    function sendLeave(state) {
        state.pendingLeaves += 1;
        sendFrame({ room: state.name, event: "leave", dst: clientId, src: clientId, payload: clientId });
    }

    function settleWaiters(state, error) {
        state.waiters.splice(0).forEach(function (waiter) {
            if (waiter.timer !== null) {
                clearTimeout(waiter.timer);
            }
            if (error === null) {
                waiter.resolve(state.room);
            } else {
                waiter.reject(error);
            }
        });
    }

    function waitUntilOpen(state, timeoutMs) {
        if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs >= 0)) {
            return Promise.reject(new RangeError("timeout must be a number of milliseconds >= 0"));
        }
        if (state.isOpen && connected()) {
            return Promise.resolve(state.room);
        }
        if (closedError !== null) {
            return Promise.reject(closedError);
        }
        if (!state.wanted) {
            return Promise.reject(new Error("room '" + state.name + "' was left"));
        }
        return new Promise(function (resolve, reject) {
            const waiter = { resolve, reject, timer: null };
            if (timeoutMs !== undefined && timeoutMs !== Infinity) {
                waiter.timer = setTimeout(function () {
                    const index = state.waiters.indexOf(waiter);
                    if (index !== -1) {
                        state.waiters.splice(index, 1);
                    }
                    reject(new TimeoutError("room '" + state.name + "' did not open within " + timeoutMs + " ms"));
                }, timeoutMs);
            }
            state.waiters.push(waiter);
        });
    }

    /**
     * Errors go to the room's `error` listeners, else the root's, else to
     * the console (once per message): a client must never throw from the
     * socket's event handlers, nor fail in silence.
     */
    function reportError(state, error) {
        if (state.emitter.listenerCount("error") > 0) {
            state.emitter.emit("error", error);
        } else if (state !== rootState && rootState.emitter.listenerCount("error") > 0) {
            rootState.emitter.emit("error", error);
        } else {
            const key = String(error && error.name) + ": " + String(error && error.message);
            if (!reportedErrors.has(key) && reportedErrors.size < 100) {
                reportedErrors.add(key);
                if (typeof console !== "undefined" && typeof console.error === "function") {
                    console.error("trioroom: an error with no 'error' listener (reported once):", error);
                }
            }
        }
    }

    function hasErrorListener(state) {
        return state.emitter.listenerCount("error") > 0 || rootState.emitter.listenerCount("error") > 0;
    }

    function checkEventName(event) {
        if (typeof event !== "string") {
            throw new TypeError("event name must be a string, got " + describe(event));
        }
        checkWellFormed(event, "event name");
        if (REFUSED_EVENTS.includes(event)) {
            throw new Error(
                "cannot send event '" + event + "': the name is reserved (" + REFUSED_EVENTS.join(", ") + ")",
            );
        }
        if (event.startsWith(EXTENSION_PREFIX)) {
            throw new Error("cannot send event '" + event + "': names starting with '" + EXTENSION_PREFIX + "' are reserved");
        }
    }

    function checkDestination(dst) {
        const target = dst === undefined || dst === null ? "" : dst;
        if (typeof target !== "string") {
            throw new TypeError("dst must be a member ID string, got " + describe(dst));
        }
        checkWellFormed(target, "dst");
        return target;
    }

    function createRoom(name) {
        const state = {
            name,
            room: null,
            emitter: null,
            isOpen: false,
            wanted: true,
            id: "",
            members: [],
            joinGeneration: 0,
            // A join went out and its join_ack (or refusal) has not come back.
            joinPending: false,
            pendingLeaves: 0,
            // Left while the session was suspended: the leave goes out on resume.
            leaveDeferred: false,
            waiters: [],
        };
        const room = {};
        state.room = room;
        state.emitter = createEmitter({
            target: room,
            onListenerError(error, event) {
                // Listener bugs go to `error` listeners when there are any; an `error` listener's own bug cannot.
                if (event !== "error" && hasErrorListener(state)) {
                    reportError(state, error);
                } else {
                    rethrowLater(error);
                }
            },
        });

        Object.defineProperty(room, "name", { value: name, enumerable: true });
        [
            "on",
            "addListener",
            "once",
            "off",
            "removeListener",
            "removeAllListeners",
            "listeners",
            "listenerCount",
            "eventNames",
            "emit",
        ].forEach(function (method) {
            room[method] = state.emitter[method];
        });

        /**
         * Join the room `roomName` on this connection and return its room object.
         * Joining a room already joined returns the same object.
         */
        room.join = function join(roomName) {
            if (typeof roomName !== "string") {
                throw new TypeError("room name must be a string, got " + describe(roomName));
            }
            checkWellFormed(roomName, "room name");
            if (closedError !== null) {
                throw new Error("cannot join '" + roomName + "': the client is closed");
            }
            const existing = rooms.get(roomName);
            if (existing !== undefined) {
                if (!existing.wanted) {
                    existing.wanted = true;
                    existing.leaveDeferred = false;
                    existing.joinGeneration = 0;
                    sendJoinIfConnected(existing);
                }
                return existing.room;
            }
            const joining = createRoom(roomName);
            rooms.set(roomName, joining);
            sendJoinIfConnected(joining);
            return joining.room;
        };

        /** Leave this room; `close` follows when the server confirms. */
        room.leave = function leave() {
            if (state === rootState) {
                throw new Error("the root room cannot be left: call close() on it to disconnect");
            }
            if (!state.wanted) {
                return room;
            }
            state.wanted = false;
            if (state.joinGeneration === epoch && connected()) {
                sendLeave(state);
            } else if (state.joinGeneration === epoch && suspended) {
                // The suspended session is still a member: leave once it resumes.
                state.leaveDeferred = true;
            } else {
                // The server has no membership to undo on this connection.
                finalizeLeft(state, new Error("left room '" + name + "'"));
            }
            return room;
        };

        /**
         * Send `event` with `payload` to the other members of this room, or
         * only to the member `dst` when given.
         */
        room.send = function send(event, payload, dst) {
            checkEventName(event);
            const target = checkDestination(dst);
            const bytes = encodeFrame({ room: name, event, dst: target, src: state.id, payload });
            if (queues(state)) {
                enqueue({ state, bytes, request: null });
                return room;
            }
            if (!room.open()) {
                throw new Error("cannot send on room '" + name + "': it is not open");
            }
            socket.send(bytes);
            return room;
        };

        /**
         * Send `event` as a request (trioroom.v1) and resolve with the
         * server's reply, or reject with its `ServerError`.
         */
        room.request = function request(event, payload, options) {
            return new Promise(function (resolve, reject) {
                checkEventName(event);
                const opts = options === undefined ? {} : options;
                if (opts === null || typeof opts !== "object") {
                    throw new TypeError("request options must be an object, got " + describe(options));
                }
                const timeout = opts.timeout === undefined ? ext.requestTimeout : opts.timeout;
                checkTimeout(timeout, "request timeout");
                const target = checkDestination(opts.dst);
                const ref = String(++lastRef);
                const bytes = encodeFrame({ room: name, event, dst: target, src: "?" + ref, payload });
                const details = { event, room: name };
                const pending = {
                    kind: "request",
                    ref,
                    bytes,
                    resolve,
                    reject,
                    timer: null,
                    event,
                    room: name,
                    // The socket it went out on (see sendProbe), or null while queued.
                    written: null,
                    queued: null,
                };
                if (queues(state)) {
                    pending.queued = { state, bytes, request: pending };
                    // Throws when full: the promise rejects.
                    enqueue(pending.queued);
                } else if (!room.open()) {
                    reject(new RequestError("not_open", "cannot send on room '" + name + "': it is not open", details));
                    return;
                }
                if (pending.queued === null && !extended) {
                    reject(new RequestError(
                        "unsupported",
                        "requests need the " + EXTENSION_PROTOCOL + " extension, which this connection does not use",
                        details,
                    ));
                    return;
                }
                if (timeout !== Infinity) {
                    pending.timer = setTimeout(function () {
                        requests.delete(ref);
                        if (pending.queued !== null) {
                            unqueue(pending.queued);
                        }
                        const error = new TimeoutError("no answer to '" + event + "' within " + timeout + " ms");
                        error.event = event;
                        error.room = name;
                        reject(error);
                    }, timeout);
                }
                if (pending.queued === null) {
                    requests.set(ref, pending);
                    pending.written = socketGeneration;
                    socket.send(bytes);
                }
            });
        };

        /** Whether the room is joined and the connection is up. */
        room.open = function open() {
            return state.isOpen && connected();
        };

        /** A copy of the member IDs, this client's own included. */
        room.members = function members() {
            return state.members.slice();
        };

        /** This client's ID in the room ("" while the room is not open). */
        room.id = function id() {
            return state.id;
        };

        /** Resolve with this room when it is open (at once if it is). */
        room.joined = function joined(timeoutMs) {
            return waitUntilOpen(state, timeoutMs);
        };

        /**
         * Remove listeners: of `event` when given a string, of every event
         * but the listed ones when given an array (the wsrooms form), or all.
         */
        room.clearListeners = function clearListeners(eventOrExceptions) {
            if (eventOrExceptions === undefined) {
                state.emitter.removeAllListeners();
            } else if (typeof eventOrExceptions === "string") {
                state.emitter.removeAllListeners(eventOrExceptions);
            } else if (Array.isArray(eventOrExceptions)) {
                const kept = new Set(eventOrExceptions);
                state.emitter.eventNames().forEach(function (event) {
                    if (!kept.has(event)) {
                        state.emitter.removeAllListeners(event);
                    }
                });
            } else {
                throw new TypeError("clearListeners takes an event name, an array of names to keep, or nothing");
            }
            return room;
        };

        if (name === ROOT_ROOM) {
            /** Resolve with the root when the connection's join_ack has arrived. */
            room.ready = function ready(timeoutMs) {
                return waitUntilOpen(state, timeoutMs);
            };

            /** Disconnect for good: closes every room and stops reconnecting. */
            room.close = function close(code = 1000, reason = "") {
                if (code !== 1000 && !(Number.isInteger(code) && code >= 3000 && code <= 4999)) {
                    throw new RangeError("close code must be 1000 or from 3000 to 4999, got " + code);
                }
                if (closedError !== null) {
                    return room;
                }
                const closing = socket;
                shutdown(new Error("the client was closed"), { code, reason, willReconnect: false });
                socket = null;
                if (closing !== null && closing.readyState < WS_CLOSING) {
                    closing.close(code, reason);
                }
                return room;
            };

            /** Leave every room but the root. */
            room.purge = function purge() {
                rooms.forEach(function (other) {
                    if (other !== rootState) {
                        other.room.leave();
                    }
                });
                return room;
            };

            /** The joined rooms by name (a frozen copy), the root included. */
            room.rooms = function joinedRooms() {
                const byName = {};
                rooms.forEach(function (other, roomName) {
                    byName[roomName] = other.room;
                });
                return Object.freeze(byName);
            };

            /** "connecting", "open", "suspended", "reconnecting" or "closed"; `state` events tell each change. */
            Object.defineProperty(room, "state", {
                get() {
                    return clientState;
                },
                enumerable: true,
            });

            /** Whether the current connection uses the trioroom.v1 extension. */
            room.extended = function isExtended() {
                return extended && socket !== null;
            };

            rooms.set(name, state);
        }
        Object.freeze(room);
        return state;
    }
}
