/**
 * Start the real Python server for integration tests:
 * `$TRIOROOM_PYTHON -m trioroom serve --host 127.0.0.1 --port N`, whose
 * first stdout line names its ws:// URL.
 */

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const STARTUP_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 15000;
const OUTPUT_LIMIT = 64 * 1024;

const running = new Set();
// A test that crashes must not leave a server behind.
process.on("exit", function () {
    for (const child of running) {
        child.kill("SIGKILL");
    }
});

/** A server with request handlers for the extension's tests (see ext_server.py). */
export const EXT_SERVER_SCRIPT = fileURLToPath(new URL("./ext_server.py", import.meta.url));

/**
 * @param {{port?: number, extraArgs?: string[], script?: string}} [options] port 0 lets the OS choose;
 *     extraArgs are more `serve` flags; script runs that Python file instead of `-m trioroom serve`
 *     (it takes --host and --port and prints the same first line)
 * @returns {Promise<{url: string, port: number, stop: () => Promise<void>, output: () => string}>}
 */
export function startServer({ port = 0, extraArgs = [], script } = {}) {
    const python = process.env.TRIOROOM_PYTHON || "python3";
    const command = script === undefined ? ["-m", "trioroom", "serve"] : [script];
    const args = [...command, "--host", "127.0.0.1", "--port", String(port), ...extraArgs];
    const child = spawn(python, args, {
        cwd: REPO_ROOT,
        env: { ...process.env, PYTHONUNBUFFERED: "1" },
        stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    let output = "";
    const exited = new Promise((resolve) => {
        child.once("exit", (code, signal) => {
            running.delete(child);
            resolve({ code, signal });
        });
    });

    function record(chunk) {
        output = (output + chunk.toString()).slice(-OUTPUT_LIMIT);
    }
    child.stderr.on("data", record);

    async function stop() {
        if (child.exitCode !== null || child.signalCode !== null) {
            return;
        }
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
    }

    return new Promise(function (resolve, reject) {
        let stdout = "";
        const timer = setTimeout(function () {
            child.kill("SIGKILL");
            reject(new Error("server did not print its URL within " + STARTUP_TIMEOUT_MS + " ms; output:\n" + output));
        }, STARTUP_TIMEOUT_MS);
        child.once("error", function (error) {
            clearTimeout(timer);
            reject(new Error("cannot start " + python + ": " + error.message));
        });
        exited.then(function ({ code, signal }) {
            clearTimeout(timer);
            reject(new Error("server exited (code " + code + ", signal " + signal + ") before printing its URL; output:\n" + output));
        });
        child.stdout.on("data", function onData(chunk) {
            record(chunk);
            stdout += chunk.toString();
            const newline = stdout.indexOf("\n");
            if (newline === -1) {
                return;
            }
            child.stdout.off("data", onData);
            child.stdout.on("data", record);
            clearTimeout(timer);
            const firstLine = stdout.slice(0, newline);
            const match = /ws:\/\/\S+/.exec(firstLine);
            if (match === null) {
                child.kill("SIGKILL");
                reject(new Error("no ws:// URL in the server's first line: " + JSON.stringify(firstLine)));
                return;
            }
            const url = match[0];
            resolve({ url, port: Number(new URL(url).port), stop, output: () => output });
        });
    });
}
