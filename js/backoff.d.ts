export interface ReconnectOptions {
    /** Reconnect after the connection drops. Default true. */
    reconnect?: boolean;
    /** Milliseconds before the first attempt. Default 500. */
    reconnectDelay?: number;
    /** Ceiling of the doubling delay, ms. Default 10000. */
    reconnectMaxDelay?: number;
    /** Share (0..1) of each delay taken off at random. Default 0.5. */
    reconnectJitter?: number;
    /** Consecutive failed attempts before giving up. Default Infinity. */
    maxReconnectAttempts?: number;
}

export type ReconnectSettings = Required<ReconnectOptions>;

export declare const RECONNECT_DEFAULTS: Readonly<ReconnectSettings>;

/** Check and complete reconnect options; throws TypeError/RangeError. */
export declare function reconnectOptions(options?: ReconnectOptions): ReconnectSettings;

/** Delay in ms before attempt number `attempt` (1 for the first). */
export declare function reconnectDelay(
    attempt: number,
    options: Pick<ReconnectSettings, "reconnectDelay" | "reconnectMaxDelay" | "reconnectJitter">,
    random?: () => number,
): number;
