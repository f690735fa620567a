/**
 * Two Chromium pages load the client from js/ as ES modules, join one room
 * on the real Python server and chat; the test reads what each page shows.
 */

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import { startServer } from "./support/server.js";

const JS_DIR = fileURLToPath(new URL("..", import.meta.url));
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
const WAIT_MS = 15000;
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };

/** Serve the client's files (not node_modules) on 127.0.0.1. */
function startStaticServer() {
    const server = createServer(async function (request, response) {
        const path = normalize(decodeURIComponent(new URL(request.url, "http://127.0.0.1").pathname));
        const file = join(JS_DIR, path);
        const type = TYPES[extname(file)];
        if (!file.startsWith(JS_DIR) || file.includes(sep + "node_modules" + sep) || type === undefined) {
            response.writeHead(404).end();
            return;
        }
        try {
            const body = await readFile(file);
            response.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
        } catch {
            response.writeHead(404).end();
        }
    });
    return new Promise((resolve) => {
        server.listen(0, "127.0.0.1", () => resolve(server));
    });
}

let roomServer;
let staticServer;
let browser;

before(async function () {
    assert.ok(existsSync(CHROMIUM), "Chromium is missing at " + CHROMIUM);
    staticServer = await startStaticServer();
    // The page comes from another port than the WebSocket: allow exactly its origin.
    const pageOrigin = "http://127.0.0.1:" + staticServer.address().port;
    roomServer = await startServer({ extraArgs: ["--allowed-origins", pageOrigin] });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60000 });
});

after(async function () {
    await browser?.close();
    await new Promise((resolve) => (staticServer ? staticServer.close(resolve) : resolve()));
    await roomServer?.stop();
});

async function openChat(room) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (error) => problems.push("page error: " + error.message));
    page.on("console", (message) => {
        if (message.type() === "error") {
            problems.push("console error: " + message.text());
        }
    });
    const { port } = staticServer.address();
    const query = new URLSearchParams({ ws: roomServer.url, room });
    await page.goto(`http://127.0.0.1:${port}/test/browser/index.html?${query}`);
    try {
        await page.locator("#status", { hasText: "joined" }).waitFor({ timeout: WAIT_MS });
    } catch (error) {
        const body = await page.locator("body").innerText();
        throw new Error(error.message + "\npage shows:\n" + body + "\n" + problems.join("\n") + "\nserver output:\n" + roomServer.output());
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

test("two pages join one room and chat", { timeout: 120000 }, async function () {
    const alice = await openChat("browser-chat ☕");
    const bob = await openChat("browser-chat ☕");
    assert.match(alice.id, /^[0-9a-f-]{36}$/);
    assert.notEqual(alice.id, bob.id);

    await logLine(alice.page, "joined: " + bob.id);
    const bothMembers = [alice.id, bob.id].sort().join(" ");
    await alice.page.locator("#members", { hasText: bothMembers }).waitFor({ timeout: WAIT_MS });
    assert.equal(await bob.page.locator("#members").textContent(), bothMembers);

    await send(alice.page, "héllo 🌍 from alice");
    await logLine(bob.page, alice.id + ": héllo 🌍 from alice");
    await send(bob.page, "hi alice, grüße");
    await logLine(alice.page, bob.id + ": hi alice, grüße");

    // Nobody hears their own broadcast: each page shows its line once, as "me".
    assert.deepEqual(await alice.page.locator("#log li").allTextContents(), [
        "joined: " + bob.id,
        "me: héllo 🌍 from alice",
        bob.id + ": hi alice, grüße",
    ]);
    assert.deepEqual(await bob.page.locator("#log li").allTextContents(), [
        alice.id + ": héllo 🌍 from alice",
        "me: hi alice, grüße",
    ]);

    await bob.context.close();
    await logLine(alice.page, "left: " + bob.id);
    assert.equal(await alice.page.locator("#members").textContent(), alice.id);

    await alice.context.close();
    assert.deepEqual(alice.problems.concat(bob.problems), []);
});
