/**
 * An in-memory stand-in for a WebSocket, driven by the test as the server.
 */

import { decodeFrame, encodeFrame } from "../../codec.js";

/**
 * A fresh WebSocket class with its own list of created sockets, so that
 * tests running side by side do not see each other's sockets.
 */
export function fakeWebSocketClass() {
    const sockets = [];
    const creationWaiters = [];

    /** Resolve with the next socket the client creates. */
    function nextSocket() {
        return new Promise((resolve) => creationWaiters.push(resolve));
    }

    class FakeWebSocket {
        static CONNECTING = 0;
        static OPEN = 1;
        static CLOSING = 2;
        static CLOSED = 3;

        constructor(url, protocols) {
            this.url = url;
            this.protocols = protocols;
            this.readyState = FakeWebSocket.CONNECTING;
            this.protocol = "";
            this.binaryType = "blob";
            this.sent = [];
            this.closeCalls = [];
            this.listenersByType = new Map();
            sockets.push(this);
            creationWaiters.splice(0).forEach((resolve) => resolve(this));
        }

        addEventListener(type, listener) {
            if (!this.listenersByType.has(type)) {
                this.listenersByType.set(type, []);
            }
            this.listenersByType.get(type).push(listener);
        }

        send(data) {
            if (this.readyState !== FakeWebSocket.OPEN) {
                throw new Error("FakeWebSocket.send while not open");
            }
            this.sent.push(decodeFrame(data));
        }

        close(code, reason) {
            this.closeCalls.push([code, reason]);
            if (this.readyState < FakeWebSocket.CLOSING) {
                this.readyState = FakeWebSocket.CLOSING;
            }
        }

        // The server's side.

        dispatch(type, event) {
            for (const listener of (this.listenersByType.get(type) || []).slice()) {
                listener.call(this, event);
            }
        }

        /** The handshake succeeded; `protocol` is the subprotocol the server selected ("" for none). */
        accept(protocol = "") {
            this.protocol = protocol;
            this.readyState = FakeWebSocket.OPEN;
            this.dispatch("open", { type: "open" });
        }

        /** Deliver a frame given as fields, as an ArrayBuffer like binaryType "arraybuffer" does. */
        deliver(frame) {
            const bytes = encodeFrame(frame);
            this.deliverRaw(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
        }

        deliverRaw(data) {
            this.dispatch("message", { type: "message", data });
        }

        /** The connection ends (server gone, network lost, or after close()). */
        drop(code = 1006) {
            this.readyState = FakeWebSocket.CLOSED;
            this.dispatch("error", { type: "error", message: "connection lost" });
            this.dispatch("close", { type: "close", code, reason: "" });
        }

        /** Frames this socket sent, by event name. */
        sentEvents() {
            return this.sent.map((frame) => frame.event);
        }
    }

    return { FakeWebSocket, sockets, nextSocket };
}

/** Resolve with the arguments of the next `event` on `room`. */
export function nextEvent(room, event) {
    return new Promise((resolve) => {
        room.once(event, (...args) => resolve(args));
    });
}
