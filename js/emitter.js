/**
 * A small event emitter with the method names of the wsrooms client's
 * emitter (`on`, `once`, `off`, `removeAllListeners`, ...), kept per object.
 *
 * @module trioroom/emitter
 */

/**
 * Create an emitter.
 *
 * A listener that throws does not stop the other listeners of the same
 * event: its error goes to `onListenerError`, which by default rethrows it
 * on a fresh task so that it shows up as an uncaught error without breaking
 * the code that emitted.
 *
 * @param {{target?: object, onListenerError?: (error: unknown, event: string) => void}} [options]
 *     `target` is what the methods return and the `this` of listeners (default: the emitter)
 * @returns {import("./emitter.js").Emitter}
 */
export function createEmitter(options = {}) {
    const onListenerError = typeof options.onListenerError === "function"
        ? options.onListenerError
        : rethrowLater;
    /** @type {Map<string, Function[]>} */
    const listenersByEvent = new Map();
    const emitter = {};
    // What the methods return and what listeners get as `this`: the room when mixed into one.
    const self = options.target === undefined ? emitter : options.target;

    function checkArguments(event, listener) {
        if (typeof event !== "string") {
            throw new TypeError("event name must be a string");
        }
        if (typeof listener !== "function") {
            throw new TypeError("listener must be a function");
        }
    }

    /**
     * Call `listener` each time `event` is emitted.
     * @param {string} event
     * @param {Function} listener
     */
    emitter.on = function on(event, listener) {
        checkArguments(event, listener);
        const list = listenersByEvent.get(event);
        if (list === undefined) {
            listenersByEvent.set(event, [listener]);
        } else {
            list.push(listener);
        }
        return self;
    };
    emitter.addListener = emitter.on;

    /**
     * Call `listener` the next time `event` is emitted only.
     * @param {string} event
     * @param {Function} listener
     */
    emitter.once = function once(event, listener) {
        checkArguments(event, listener);
        function onceWrapper(...args) {
            emitter.off(event, onceWrapper);
            return listener.apply(self, args);
        }
        // Lets off(event, listener) find the wrapper.
        onceWrapper.listener = listener;
        return emitter.on(event, onceWrapper);
    };

    /**
     * Remove one registration of `listener` for `event` (the latest one).
     * @param {string} event
     * @param {Function} listener
     */
    emitter.off = function off(event, listener) {
        checkArguments(event, listener);
        const list = listenersByEvent.get(event);
        if (list !== undefined) {
            for (let i = list.length - 1; i >= 0; i -= 1) {
                if (list[i] === listener || list[i].listener === listener) {
                    list.splice(i, 1);
                    break;
                }
            }
            if (list.length === 0) {
                listenersByEvent.delete(event);
            }
        }
        return self;
    };
    emitter.removeListener = emitter.off;

    /**
     * Remove every listener of `event`, or of every event when none is given.
     * @param {string} [event]
     */
    emitter.removeAllListeners = function removeAllListeners(event) {
        if (event === undefined) {
            listenersByEvent.clear();
        } else {
            listenersByEvent.delete(event);
        }
        return self;
    };

    /**
     * The listeners of `event` (a copy), or of all events when none is given.
     * @param {string} [event]
     * @returns {Function[]}
     */
    emitter.listeners = function listeners(event) {
        if (event === undefined) {
            return Array.from(listenersByEvent.values()).flat().map(unwrap);
        }
        return (listenersByEvent.get(event) || []).map(unwrap);
    };

    /**
     * The names of the events that have listeners.
     * @returns {string[]}
     */
    emitter.eventNames = function eventNames() {
        return Array.from(listenersByEvent.keys());
    };

    /**
     * Number of listeners of `event`.
     * @param {string} event
     * @returns {number}
     */
    emitter.listenerCount = function listenerCount(event) {
        const list = listenersByEvent.get(event);
        return list === undefined ? 0 : list.length;
    };

    /**
     * Call the listeners of `event` with `args`, in registration order.
     * @param {string} event
     * @param {...unknown} args
     * @returns {boolean} whether there was a listener
     */
    emitter.emit = function emit(event, ...args) {
        const list = listenersByEvent.get(event);
        if (list === undefined) {
            return false;
        }
        // A snapshot, so listeners added or removed while emitting take effect next time.
        list.slice().forEach(function (listener) {
            try {
                listener.apply(self, args);
            } catch (error) {
                onListenerError(error, event);
            }
        });
        return true;
    };

    return emitter;
}

function unwrap(listener) {
    return typeof listener.listener === "function" ? listener.listener : listener;
}

/**
 * Throw `error` from a new task, where it reaches the runtime's uncaught
 * error reporting without unwinding the caller.
 *
 * @param {unknown} error
 */
export function rethrowLater(error) {
    setTimeout(function () {
        throw error;
    }, 0);
}
