/**
 * A TCP proxy on 127.0.0.1 whose connections the test can cut abruptly, as
 * a network failure would: both sides get a TCP reset, no WebSocket close
 * frame. New connections keep going through after a cut, unless the test
 * refuses them (a server that is down), and a direction can be held (bytes
 * kept back, and lost with the next cut: what a dying link does).
 */

import { connect, createServer } from "node:net";

/**
 * @param {number} targetPort where to forward, on 127.0.0.1
 * @param {{cutAfterMs?: number}} [options] cut every connection this long after it is accepted (a flapping server)
 * @returns {Promise<{port: number, url: (serverUrl: string) => string, cut: () => number,
 *     connections: () => number, accepted: () => number, refuse: (on: boolean) => void,
 *     hold: (direction: "up" | "down") => void, close: () => Promise<void>}>}
 */
export async function startProxy(targetPort, { cutAfterMs } = {}) {
    const pairs = new Set();
    let refusing = false;
    let accepted = 0;
    /** Directions held: "up" is client to server, "down" server to client. */
    const held = new Set();

    function forward(from, to, direction) {
        from.on("data", function (chunk) {
            if (!held.has(direction)) {
                to.write(chunk);
            }
        });
    }

    function resetPair(pair) {
        pairs.delete(pair);
        clearTimeout(pair.timer);
        for (const socket of [pair.inbound, pair.outbound]) {
            try {
                socket.resetAndDestroy();
            } catch {
                socket.destroy();
            }
        }
    }

    const server = createServer(function (inbound) {
        if (refusing) {
            inbound.on("error", () => {});
            inbound.resetAndDestroy();
            return;
        }
        accepted += 1;
        const outbound = connect(targetPort, "127.0.0.1");
        const pair = { inbound, outbound, timer: null };
        pairs.add(pair);
        forward(inbound, outbound, "up");
        forward(outbound, inbound, "down");
        function end() {
            pairs.delete(pair);
            clearTimeout(pair.timer);
            inbound.destroy();
            outbound.destroy();
        }
        for (const socket of [inbound, outbound]) {
            // A reset peer is the point of this proxy, not a failure.
            socket.on("error", end);
            socket.on("close", end);
        }
        if (cutAfterMs !== undefined) {
            pair.timer = setTimeout(() => resetPair(pair), cutAfterMs);
        }
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address();
    return {
        port,
        /** `serverUrl` with its port replaced by the proxy's. */
        url(serverUrl) {
            const url = new URL(serverUrl);
            url.port = String(port);
            return url.href;
        },
        /** Reset every connection through the proxy; returns how many there were. Held bytes are lost. */
        cut() {
            const count = pairs.size;
            Array.from(pairs).forEach(resetPair);
            held.clear();
            return count;
        },
        connections() {
            return pairs.size;
        },
        /** Connections accepted (and forwarded) so far. */
        accepted() {
            return accepted;
        },
        /** Reset new connections at once (true), or forward them again (false). */
        refuse(on) {
            refusing = on;
        },
        /** Keep back what goes "up" (client to server) or "down" until the next cut, which loses it. */
        hold(direction) {
            held.add(direction);
        },
        close() {
            this.cut();
            return new Promise((resolve) => server.close(() => resolve()));
        },
    };
}
