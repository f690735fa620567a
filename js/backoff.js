/**
 * Reconnect delays: exponential backoff with jitter.
 *
 * @module trioroom/backoff
 */

/** Defaults of the reconnect options of {@link import("./trioroom.js").trioroom}. */
export const RECONNECT_DEFAULTS = Object.freeze({
    reconnect: true,
    reconnectDelay: 500,
    reconnectMaxDelay: 10000,
    reconnectJitter: 0.5,
    maxReconnectAttempts: Infinity,
});

/**
 * Check and complete reconnect options.
 *
 * @param {object} [options]
 * @returns {{reconnect: boolean, reconnectDelay: number, reconnectMaxDelay: number,
 *            reconnectJitter: number, maxReconnectAttempts: number}}
 * @throws {TypeError | RangeError} for a value of the wrong type or range
 */
export function reconnectOptions(options = {}) {
    const merged = Object.assign({}, RECONNECT_DEFAULTS);
    Object.keys(RECONNECT_DEFAULTS).forEach(function (name) {
        if (options[name] !== undefined) {
            merged[name] = options[name];
        }
    });
    if (typeof merged.reconnect !== "boolean") {
        throw new TypeError("option reconnect must be a boolean");
    }
    ["reconnectDelay", "reconnectMaxDelay", "maxReconnectAttempts"].forEach(function (name) {
        const value = merged[name];
        if (typeof value !== "number" || Number.isNaN(value) || value < 0) {
            throw new RangeError("option " + name + " must be a number >= 0");
        }
    });
    if (!Number.isFinite(merged.reconnectDelay) || !Number.isFinite(merged.reconnectMaxDelay)) {
        throw new RangeError("options reconnectDelay and reconnectMaxDelay must be finite");
    }
    const jitter = merged.reconnectJitter;
    if (typeof jitter !== "number" || !(jitter >= 0 && jitter <= 1)) {
        throw new RangeError("option reconnectJitter must be a number from 0 to 1");
    }
    return merged;
}

/**
 * The delay before reconnect attempt number `attempt` (1 for the first).
 *
 * The ceiling doubles from `reconnectDelay` up to `reconnectMaxDelay`; the
 * jitter then takes a random share of up to `reconnectJitter` off it, so
 * that clients dropped together by a server restart do not all come back
 * in the same millisecond.
 *
 * @param {number} attempt
 * @param {{reconnectDelay: number, reconnectMaxDelay: number, reconnectJitter: number}} options
 * @param {() => number} [random] a source of numbers in [0, 1), `Math.random` by default
 * @returns {number} milliseconds
 */
export function reconnectDelay(attempt, options, random = Math.random) {
    const exponent = Math.max(0, Math.min(attempt - 1, 52));
    const ceiling = Math.min(options.reconnectMaxDelay, options.reconnectDelay * 2 ** exponent);
    return Math.round(ceiling * (1 - options.reconnectJitter * random()));
}
