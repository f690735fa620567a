/**
 * trioroom's JavaScript client, for browsers and Node >= 20.
 *
 * Same API as the wsrooms client (`wsrooms(url)` returns the root room;
 * rooms have `join`, `leave`, `send`, `open`, `members`, `id`, `on`), without
 * its bugs, plus automatic reconnection and promise helpers.
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
import { describe, encodeUtf8, isArrayBuffer } from "./utf8.js";

export { FrameError, RESERVED_EVENTS, ROOT_ROOM } from "./codec.js";
export { json, text } from "./utf8.js";

/**
 * Events that only this client emits, never sent on the wire. A frame that
 * arrives with one of these names is refused, so no peer can fake them.
 */
export const LOCAL_EVENTS = Object.freeze(["open", "close", "error", "reconnecting", "reconnect_failed"]);

/** Event names `send` refuses: the protocol's reserved names and the local ones. */
export const REFUSED_EVENTS = Object.freeze(Array.from(new Set(RESERVED_EVENTS.concat(LOCAL_EVENTS))));

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
 * A promise helper (`ready`, `joined`) ran out of time.
 */
export class TimeoutError extends Error {
    constructor(message) {
        super(message);
        this.name = "TimeoutError";
    }
}

/**
 * Connect to a trioroom (or wsrooms) server and return the root room.
 *
 * The connection opens in the background: wait for the root's `open` event
 * or `await root.ready()` before sending. Rooms can be joined at once; the
 * `join` goes out when the root is open.
 *
 * @param {string | URL} url e.g. `"ws://127.0.0.1:8080/ws"`
 * @param {object} [options]
 * @param {Function} [options.WebSocket] WebSocket constructor; default `globalThis.WebSocket`
 *     (Node 20 has none: pass `WebSocket` from the `ws` package)
 * @param {string | string[]} [options.protocols] subprotocols for the WebSocket handshake
 * @param {boolean} [options.reconnect=true] reconnect after the connection drops
 * @param {number} [options.reconnectDelay=500] ms before the first reconnect attempt
 * @param {number} [options.reconnectMaxDelay=10000] ceiling of the doubling delay, ms
 * @param {number} [options.reconnectJitter=0.5] share (0..1) of the delay taken off at random
 * @param {number} [options.maxReconnectAttempts=Infinity] consecutive failed attempts before giving up
 * @returns {import("./trioroom.js").RootRoom}
 * @throws {TypeError} for a bad argument or when no WebSocket implementation is available
 */
export function trioroom(url, options = {}) {
    if (typeof url !== "string" && !(typeof URL === "function" && url instanceof URL)) {
        throw new TypeError("url must be a string or a URL, got " + describe(url));
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
    return createClient(String(url), WebSocketImpl, options.protocols, reconnectOptions(options));
}

export default trioroom;

/**
 * All the state of one connection. Nothing is shared between clients.
 */
function createClient(url, WebSocketImpl, protocols, settings) {
    /** Registered rooms by name; the root is always there. */
    const rooms = new Map();
    let socket = null;
    // Counts sockets, so a room knows whether its join went out on the current one.
    let generation = 0;
    let clientId = "";
    let failedAttempts = 0;
    let reconnectTimer = null;
    let closedError = null;

    const rootState = createRoom(ROOT_ROOM);
    openSocket({ throwOnFailure: true });
    return rootState.room;

    function socketIsOpen() {
        return socket !== null && socket.readyState === WS_OPEN;
    }

    function openSocket({ throwOnFailure }) {
        let candidate;
        try {
            candidate = protocols === undefined ? new WebSocketImpl(url) : new WebSocketImpl(url, protocols);
        } catch (error) {
            // A bad URL is the caller's mistake: say so at once rather than retry forever.
            if (throwOnFailure) {
                throw error;
            }
            reportError(rootState, error);
            scheduleReconnect();
            return;
        }
        generation += 1;
        socket = candidate;
        candidate.binaryType = "arraybuffer";
        const isCurrent = () => socket === candidate;
        candidate.addEventListener("message", function (event) {
            if (isCurrent()) {
                onMessage(event.data);
            }
        });
        candidate.addEventListener("close", function () {
            if (isCurrent()) {
                onSocketClose();
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

    function onMessage(data) {
        let bytes;
        if (typeof data === "string") {
            // A text frame: read its bytes like a binary frame, as the server does.
            bytes = encodeUtf8(data);
        } else if (ArrayBuffer.isView(data) || isArrayBuffer(data)) {
            bytes = data;
        } else {
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
            reportError(rootState, error);
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
                if (REFUSED_EVENTS.includes(frame.event)) {
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
        if (state === rootState) {
            clientId = frame.src;
            failedAttempts = 0;
        }
        // A leave is on its way; its leave_ack closes the room.
        if (!state.wanted) {
            return;
        }
        state.id = frame.src;
        state.members = members;
        const wasOpen = state.isOpen;
        state.isOpen = true;
        if (state === rootState) {
            rooms.forEach(sendJoinIfConnected);
        }
        if (!wasOpen) {
            state.emitter.emit("open");
        }
        settleWaiters(state, null);
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

    function onSocketClose() {
        socket = null;
        rooms.forEach(function (state) {
            state.pendingLeaves = 0;
            state.joinGeneration = 0;
        });
        // Rooms first and root last, so the root's close means everything is closed.
        Array.from(rooms.values()).reverse().forEach(function (state) {
            if (!state.wanted) {
                // The server dropped the membership with the connection.
                finalizeLeft(state, new Error("left room '" + state.name + "'"));
            } else {
                markClosed(state);
            }
        });
        if (closedError !== null) {
            return;
        }
        if (!settings.reconnect) {
            shutdown(new Error("the connection closed and reconnect is off"));
            return;
        }
        scheduleReconnect();
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

    /** Stop for good: no socket, no reconnect, every room closed, every waiter rejected. */
    function shutdown(error) {
        if (closedError !== null) {
            return;
        }
        closedError = error;
        if (reconnectTimer !== null) {
            clearTimeout(reconnectTimer);
            reconnectTimer = null;
        }
        Array.from(rooms.values()).reverse().forEach(function (state) {
            if (state === rootState) {
                markClosed(state);
                settleWaiters(state, error);
            } else {
                finalizeLeft(state, error);
            }
        });
    }

    function markClosed(state) {
        const wasOpen = state.isOpen;
        state.isOpen = false;
        state.members = [];
        state.id = "";
        if (wasOpen) {
            state.emitter.emit("close");
        }
    }

    function finalizeLeft(state, error) {
        state.wanted = false;
        state.pendingLeaves = 0;
        state.joinGeneration = 0;
        if (rooms.get(state.name) === state) {
            rooms.delete(state.name);
        }
        markClosed(state);
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
            !socketIsOpen() ||
            state.joinGeneration === generation
        ) {
            return;
        }
        state.joinGeneration = generation;
        sendFrame({ room: state.name, event: "join", dst: "", src: "", payload: "" });
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
        if (state.isOpen && socketIsOpen()) {
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
     * Errors go to the room's `error` listeners, else the root's, else nowhere:
     * a client must never throw from the socket's event handlers.
     */
    function reportError(state, error) {
        if (state.emitter.listenerCount("error") > 0) {
            state.emitter.emit("error", error);
        } else if (state !== rootState && rootState.emitter.listenerCount("error") > 0) {
            rootState.emitter.emit("error", error);
        }
    }

    function hasErrorListener(state) {
        return state.emitter.listenerCount("error") > 0 || rootState.emitter.listenerCount("error") > 0;
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
            pendingLeaves: 0,
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
            if (closedError !== null) {
                throw new Error("cannot join '" + roomName + "': the client is closed");
            }
            const existing = rooms.get(roomName);
            if (existing !== undefined) {
                if (!existing.wanted) {
                    existing.wanted = true;
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
            if (socketIsOpen() && state.joinGeneration === generation) {
                state.pendingLeaves += 1;
                sendFrame({ room: name, event: "leave", dst: clientId, src: clientId, payload: clientId });
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
            if (typeof event !== "string") {
                throw new TypeError("event name must be a string, got " + describe(event));
            }
            if (REFUSED_EVENTS.includes(event)) {
                throw new Error(
                    "cannot send event '" + event + "': the name is reserved (" + REFUSED_EVENTS.join(", ") + ")",
                );
            }
            const target = dst === undefined || dst === null ? "" : dst;
            if (typeof target !== "string") {
                throw new TypeError("dst must be a member ID string, got " + describe(dst));
            }
            const bytes = encodeFrame({ room: name, event, dst: target, src: state.id, payload });
            if (!room.open()) {
                throw new Error("cannot send on room '" + name + "': it is not open");
            }
            socket.send(bytes);
            return room;
        };

        /** Whether the room is joined and the connection is up. */
        room.open = function open() {
            return state.isOpen && socketIsOpen();
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
                shutdown(new Error("the client was closed"));
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

            rooms.set(name, state);
        }
        Object.freeze(room);
        return state;
    }
}
