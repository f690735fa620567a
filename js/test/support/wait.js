/**
 * Waiting on events with a deadline, so a broken test fails with a message
 * instead of hanging. Deadlines are generous: they only bound failures.
 */

export const DEADLINE_MS = 15000;

/** Reject with `what` if `promise` has not settled within `ms`. */
export function within(promise, what, ms = DEADLINE_MS) {
    let timer;
    const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("timed out after " + ms + " ms waiting for " + what)), ms);
    });
    return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** The arguments of the next `event` on `emitter` (a room). */
export function next(emitter, event, what = event, ms = DEADLINE_MS) {
    return within(new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), what, ms);
}

/**
 * Resolve once `check()` is true, testing now and after each of `events`
 * on `emitter`.
 */
export function until(emitter, events, check, what, ms = DEADLINE_MS) {
    const names = Array.isArray(events) ? events : [events];
    let listener;
    const reached = new Promise((resolve) => {
        listener = () => {
            if (check()) {
                resolve();
            }
        };
        names.forEach((name) => emitter.on(name, listener));
        listener();
    });
    return within(reached, what, ms).finally(() => names.forEach((name) => emitter.off(name, listener)));
}
