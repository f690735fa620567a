// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listener = (...args: any[]) => void;

/** The listener methods of the wsrooms client's emitter, kept per object. */
export interface Emitter<Self = unknown> {
    on(event: string, listener: Listener): Self;
    addListener(event: string, listener: Listener): Self;
    once(event: string, listener: Listener): Self;
    off(event: string, listener: Listener): Self;
    removeListener(event: string, listener: Listener): Self;
    removeAllListeners(event?: string): Self;
    listeners(event?: string): Listener[];
    listenerCount(event: string): number;
    eventNames(): string[];
    emit(event: string, ...args: unknown[]): boolean;
}

export interface EmitterOptions<Target extends object> {
    /** What the methods return and listeners get as `this`. */
    target?: Target;
    /** Gets errors thrown by listeners; by default they are rethrown on a new task. */
    onListenerError?: (error: unknown, event: string) => void;
}

export declare function createEmitter<Target extends object = Emitter<unknown>>(
    options?: EmitterOptions<Target>,
): Emitter<Target>;

/** Throw `error` from a new task. */
export declare function rethrowLater(error: unknown): void;
