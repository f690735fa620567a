/**
 * A TCP proxy on 127.0.0.1 whose connections the test can cut abruptly, as
 * a network failure would: both sides get a TCP reset, no WebSocket close
 * frame. New connections keep going through after a cut.
 */

import { connect, createServer } from "node:net";

/**
 * @param {number} targetPort where to forward, on 127.0.0.1
 * @returns {Promise<{port: number, url: (serverUrl: string) => string, cut: () => number,
 *     connections: () => number, close: () => Promise<void>}>}
 */
export async function startProxy(targetPort) {
    const pairs = new Set();
    const server = createServer(function (inbound) {
        const outbound = connect(targetPort, "127.0.0.1");
        const pair = { inbound, outbound };
        pairs.add(pair);
        inbound.pipe(outbound);
        outbound.pipe(inbound);
        function end() {
            pairs.delete(pair);
            inbound.destroy();
            outbound.destroy();
        }
        for (const socket of [inbound, outbound]) {
            // A reset peer is the point of this proxy, not a failure.
            socket.on("error", end);
            socket.on("close", end);
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
        /** Reset every connection through the proxy; returns how many there were. */
        cut() {
            const count = pairs.size;
            for (const pair of Array.from(pairs)) {
                pairs.delete(pair);
                for (const socket of [pair.inbound, pair.outbound]) {
                    try {
                        socket.resetAndDestroy();
                    } catch {
                        socket.destroy();
                    }
                }
            }
            return count;
        },
        connections() {
            return pairs.size;
        },
        close() {
            this.cut();
            return new Promise((resolve) => server.close(() => resolve()));
        },
    };
}
