import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { RECONNECT_DEFAULTS, reconnectDelay, reconnectOptions } from "../backoff.js";

describe("reconnectDelay", function () {
    const noJitter = { reconnectDelay: 100, reconnectMaxDelay: 1000, reconnectJitter: 0 };

    test("doubles from reconnectDelay up to reconnectMaxDelay", function () {
        const delays = [1, 2, 3, 4, 5, 6, 100, 5000].map((attempt) => reconnectDelay(attempt, noJitter));
        assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
    });

    test("jitter takes up to its share off the ceiling", function () {
        const options = { reconnectDelay: 100, reconnectMaxDelay: 1000, reconnectJitter: 0.5 };
        assert.equal(reconnectDelay(3, options, () => 0), 400);
        assert.equal(reconnectDelay(3, options, () => 0.5), 300);
        assert.equal(reconnectDelay(3, options, () => 0.999999), 200);
        for (let i = 0; i < 1000; i += 1) {
            const delay = reconnectDelay(2, options);
            assert.ok(delay >= 100 && delay <= 200, String(delay));
        }
    });

    test("full jitter can go down to zero", function () {
        const options = { reconnectDelay: 100, reconnectMaxDelay: 1000, reconnectJitter: 1 };
        assert.equal(reconnectDelay(1, options, () => 0.999999), 0);
    });
});

describe("reconnectOptions", function () {
    test("fills in the defaults", function () {
        assert.deepEqual(reconnectOptions({}), { ...RECONNECT_DEFAULTS });
        assert.equal(reconnectOptions({ reconnect: false }).reconnect, false);
        assert.equal(reconnectOptions({ maxReconnectAttempts: 3 }).maxReconnectAttempts, 3);
    });

    test("refuses values of the wrong type or range", function () {
        assert.throws(() => reconnectOptions({ reconnect: "yes" }), TypeError);
        assert.throws(() => reconnectOptions({ reconnectDelay: -1 }), RangeError);
        assert.throws(() => reconnectOptions({ reconnectMaxDelay: Infinity }), RangeError);
        assert.throws(() => reconnectOptions({ reconnectJitter: 2 }), RangeError);
        assert.throws(() => reconnectOptions({ reconnectJitter: Number.NaN }), RangeError);
        assert.throws(() => reconnectOptions({ maxReconnectAttempts: "3" }), RangeError);
    });
});
