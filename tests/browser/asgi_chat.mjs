// Two Chromium pages chat through a web application that mounts trioroom (ASGI engine).
//
// Usage: node asgi_chat.mjs BASE_URL WS_URL
//
// The web application serves js/ at BASE_URL/client/ and the room endpoint at
// WS_URL, on one port: each page loads the JavaScript client from the app and
// connects back to it. Driven by tests/test_asgi.py. Prints "ok" and exits 0
// when every check passed.

import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../js/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [baseUrl, wsUrl] = process.argv.slice(2);
const CHROMIUM = process.env.TRIOROOM_CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
const WAIT_MS = 30000;
const ROOM = "asgi ☕";

async function openChat(browser) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (error) => problems.push("page error: " + error.message));
    page.on("console", (message) => {
        if (message.type() === "error") {
            problems.push("console error: " + message.text());
        }
    });
    const query = new URLSearchParams({ ws: wsUrl, room: ROOM });
    await page.goto(`${baseUrl}/client/test/browser/index.html?${query}`);
    try {
        await page.locator("#status", { hasText: "joined" }).waitFor({ timeout: WAIT_MS });
    } catch (error) {
        const body = await page.locator("body").innerText();
        throw new Error(error.message + "\npage shows:\n" + body + "\n" + problems.join("\n"));
    }
    const id = (await page.locator("#me").textContent()).trim();
    return { page, context, id, problems };
}

async function send(page, message) {
    await page.fill("#message", message);
    await page.click("#send");
}

function logLine(page, line) {
    return page.locator("#log li", { hasText: line }).first().waitFor({ timeout: WAIT_MS });
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60000 });
try {
    const alice = await openChat(browser);
    const bob = await openChat(browser);
    assert.match(alice.id, /^[0-9a-f-]{36}$/);
    assert.notEqual(alice.id, bob.id);
    await logLine(alice.page, "joined: " + bob.id);
    await send(alice.page, "héllo 🌍 from alice");
    await logLine(bob.page, alice.id + ": héllo 🌍 from alice");
    await send(bob.page, "hi alice");
    await logLine(alice.page, bob.id + ": hi alice");
    await bob.context.close();
    await logLine(alice.page, "left: " + bob.id);
    await alice.context.close();
    assert.deepEqual(alice.problems.concat(bob.problems), []);
    process.stdout.write("ok\n");
} finally {
    await browser.close();
}
