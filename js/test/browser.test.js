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
import { WebSocket } from "ws";

import { trioroom } from "../trioroom.js";
import { startProxy } from "./support/proxy.js";
import { EXT_SERVER_SCRIPT, startServer } from "./support/server.js";

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

test("a page whose connection is cut while messages flow resumes without losing one", { timeout: 120000 }, async function (t) {
    const pageOrigin = "http://127.0.0.1:" + staticServer.address().port;
    // Bob sends fast, and the page's session must queue what he sends while it is away
    // (beyond --queue-frames the server ends the session: buffer_overflow).
    const server = await startServer({
        extraArgs: ["--allowed-origins", pageOrigin, "--rate-limit", "100000", "--rate-burst", "100000", "--queue-frames", "4096"],
    });
    t.after(() => server.stop());
    // The page reaches the server through a TCP proxy that the test cuts: a real network drop.
    const proxy = await startProxy(server.port);
    t.after(() => proxy.close());
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    const query = new URLSearchParams({ ws: proxy.url(server.url), room: "stream" });
    await page.goto(`http://127.0.0.1:${staticServer.address().port}/test/browser/stream.html?${query}`);
    await page.locator("#status", { hasText: "joined" }).waitFor({ timeout: WAIT_MS });
    const id = (await page.locator("#me").textContent()).trim();
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(await page.locator("#extended").textContent(), "true");

    const bob = trioroom(server.url, { WebSocket, reconnect: false });
    t.after(() => bob.close());
    const bobRoom = await bob.join("stream").joined(WAIT_MS);
    const TOTAL = 400;
    const send = (from, to) => {
        for (let i = from; i < to; i += 1) {
            bobRoom.send("n", String(i));
        }
    };
    send(0, 100);
    await page.locator("#log li").nth(49).waitFor({ timeout: WAIT_MS });
    // Cut right after a burst, so frames are in flight, and keep sending while the page is away.
    send(100, 200);
    assert.equal(proxy.cut(), 1);
    const shownAtCut = await page.locator("#log li").count();
    for (let i = 200; i < TOTAL; i += 20) {
        send(i, i + 20);
        await new Promise((resolve) => setTimeout(resolve, 5));
    }
    try {
        await page.locator("#log li").nth(TOTAL - 1).waitFor({ timeout: WAIT_MS });
    } catch (error) {
        const events = await page.locator("#events li").allTextContents();
        const count = await page.locator("#log li").count();
        throw new Error(error.message + "\npage shows " + count + " messages (" + shownAtCut + " at the cut), events:\n" + events.join("\n") + "\nserver output:\n" + server.output());
    }
    await new Promise((resolve) => setTimeout(resolve, 300));

    const shown = await page.locator("#log li").allTextContents();
    assert.ok(shownAtCut < TOTAL, "cut before the page had everything: " + shownAtCut);
    assert.deepEqual(shown, Array.from({ length: TOTAL }, (_, index) => String(index)), "every message once, in order");
    const events = (await page.locator("#events li").allTextContents()).filter((line) => !line.startsWith("error "));
    assert.deepEqual(events.slice(0, 3), ["root open", "room open", "root reconnecting 1 100"]);
    assert.match(events[3], /^root resumed \d+$/);
    assert.equal(events.length, 4, "no close, no second open: " + events.join(", "));
    assert.equal(await page.locator("#status").textContent(), "resumed");
    assert.equal((await page.locator("#me").textContent()).trim(), id, "the same ID");
    assert.ok(bobRoom.members().includes(id));
    assert.deepEqual(pageErrors, []);
});

/** A harness page (test/browser/harness.html) importing the client from `client` and connecting to `ws`. */
async function openHarness(t, client, ws) {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const query = new URLSearchParams({ client, ws });
    await page.goto(`http://127.0.0.1:${staticServer.address().port}/test/browser/harness.html?${query}`);
    await page.locator("#status", { hasNotText: "loading" }).waitFor({ timeout: WAIT_MS });
    return { page, status: (await page.locator("#status").textContent()).trim() };
}

test("a page on another origin imports the client from trioroom serve when --cors-origins allows it", { timeout: 120000 }, async function (t) {
    const pageOrigin = "http://127.0.0.1:" + staticServer.address().port;
    const allowing = await startServer({ extraArgs: ["--allowed-origins", pageOrigin, "--cors-origins", pageOrigin] });
    t.after(() => allowing.stop());
    const clientUrl = (server) => "http://127.0.0.1:" + server.port + "/js/trioroom.js";
    const { status } = await openHarness(t, clientUrl(allowing), allowing.url);
    assert.match(status, /^ready [0-9a-f-]{36}$/, status);

    // Without the setting the browser refuses the module: no CORS header.
    const { status: refused } = await openHarness(t, clientUrl(roomServer), roomServer.url);
    assert.match(refused, /^failed: /, refused);
});

test("in Chromium: state walks open, suspended, open across a cut, and a kick ends the client for good", { timeout: 120000 }, async function (t) {
    const pageOrigin = "http://127.0.0.1:" + staticServer.address().port;
    const server = await startServer({ script: EXT_SERVER_SCRIPT, extraArgs: ["--allowed-origins", pageOrigin] });
    t.after(() => server.stop());
    const proxy = await startProxy(server.port);
    t.after(() => proxy.close());
    const { page, status } = await openHarness(t, "../../trioroom.js", proxy.url(server.url));
    assert.match(status, /^ready /, status);

    proxy.cut();
    await page.waitForFunction(() => window.states.at(-1) === "open" && window.states.length >= 4, null, { timeout: WAIT_MS });
    assert.deepEqual(await page.evaluate(() => window.states), ["connecting", "open", "suspended", "open"]);

    await page.evaluate(() => window.root.request("kick").catch(() => {}));
    await page.waitForFunction(() => window.states.at(-1) === "closed", null, { timeout: WAIT_MS });
    assert.deepEqual(await page.evaluate(() => window.closes), [{ code: 4000, reason: "kicked", willReconnect: false }]);
    const sockets = await page.evaluate(() => window.sockets.length);
    await new Promise((resolve) => setTimeout(resolve, 5000));
    assert.equal(await page.evaluate(() => window.sockets.length), sockets, "no reconnect within 5 s");
    assert.equal(await page.evaluate(() => window.root.state), "closed");
});
