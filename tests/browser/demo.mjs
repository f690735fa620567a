// Two Chromium pages use the demo chat served by `trioroom serve`.
//
// Usage: node demo.mjs BASE_URL OUTPUT_DIR
//
// Driven by tests/test_demo_browser.py, which watches stdout: after the line
// "restart the server" it stops the server and starts it again on the same
// port; the pages must show that they reconnect, then chat again.
// Screenshots go to OUTPUT_DIR. Exit status 0 means every check passed.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(new URL("../../js/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [baseUrl, outputDir] = process.argv.slice(2);
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
const ROOM = "tea ☕";

function step(text) {
    process.stdout.write(text + "\n");
}

async function openChat(browser, name) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 620 } });
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (error) => problems.push("page error: " + error.message));
    page.on("console", (message) => {
        if (message.type() === "error") {
            problems.push("console error: " + message.text());
        }
    });
    page.on("response", (response) => {
        if (response.status() >= 400) {
            problems.push(`HTTP ${response.status()} for ${response.url()}`);
        }
    });
    await page.goto(baseUrl + "/");
    await page.locator("#status.online").waitFor({ timeout: WAIT_MS });
    // The default room is joined on load.
    await page.locator("#rooms li.active", { hasText: "#lobby" }).waitFor({ timeout: WAIT_MS });
    await page.fill("#name", name);
    await page.press("#name", "Tab");
    return { name, context, page, problems };
}

async function joinRoom(chat, room) {
    await chat.page.fill("#join-name", room);
    await chat.page.click("#join-form button");
    await chat.page.locator("#room-title", { hasText: "#" + room }).waitFor({ timeout: WAIT_MS });
    await chat.page.locator("#message:enabled").waitFor({ timeout: WAIT_MS });
}

async function say(chat, text) {
    await chat.page.fill("#message", text);
    await chat.page.press("#message", "Enter");
}

function logLine(chat, kind, text) {
    return chat.page.locator(`#log li.${kind}`, { hasText: text }).first().waitFor({ timeout: WAIT_MS });
}


async function waitForMembers(chat, expected) {
    await chat.page.waitForFunction(
        (want) =>
            JSON.stringify(Array.from(document.querySelectorAll("#members li"), (li) => li.textContent.trim())) ===
            JSON.stringify(want),
        expected,
        { timeout: WAIT_MS },
    );
}

async function main() {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60000 });
    const chats = [];
    try {
        const alice = await openChat(browser, "alice");
        chats.push(alice);
        const bob = await openChat(browser, "bob");
        chats.push(bob);
        step("both pages online");

        await joinRoom(alice, ROOM);
        await joinRoom(bob, ROOM);
        // Member lists update, with the names each page announced.
        await waitForMembers(alice, ["aliceyou", "bob"]);
        await waitForMembers(bob, ["bobyou", "alice"]);
        await logLine(alice, "system", "bob joined");
        step("both pages in the room");

        await say(alice, "hello from alice, grüße ☕");
        await logLine(bob, "message", "hello from alice, grüße ☕");
        await say(bob, "hi alice");
        await logLine(alice, "message", "hi alice");
        step("room messages crossed");

        // A direct message: bob clicks alice in the member list.
        await bob.page.click("#members button.name >> text=alice");
        await bob.page.locator("#target:not([hidden])", { hasText: "alice" }).waitFor({ timeout: WAIT_MS });
        await say(bob, "psst, just for you");
        await logLine(alice, "direct", "psst, just for you");
        await logLine(bob, "direct", "psst, just for you");
        step("direct message crossed");

        // The lobby kept bob's messages out; its unread badge stays empty.
        assert.equal(await alice.page.locator("#rooms li", { hasText: "#lobby" }).locator(".count").count(), 0);
        await alice.page.screenshot({ path: join(outputDir, "demo.png") });

        // Leaving a room updates the other member list.
        await bob.page.click(`#rooms li:has-text("#lobby") button.leave`);
        await bob.page.locator("#rooms li", { hasText: "#lobby" }).waitFor({ state: "detached", timeout: WAIT_MS });
        await alice.page.click("#rooms li button.room >> text=#lobby");
        await waitForMembers(alice, ["aliceyou"]);
        await logLine(alice, "system", "bob left");
        await alice.page.click(`#rooms li button.room >> text=#${ROOM}`);
        step("leaving works");

        const before = alice.problems.concat(bob.problems);
        assert.deepEqual(before, [], "problems before the restart:\n" + before.join("\n"));

        // Reconnection: the test restarts the server on the same port.
        step("restart the server");
        await alice.page.locator("#status.reconnecting, #status.offline").waitFor({ timeout: WAIT_MS });
        await alice.page.locator("#status.reconnecting").waitFor({ timeout: WAIT_MS });
        await alice.page.screenshot({ path: join(outputDir, "demo-reconnecting.png") });
        step("pages show they are reconnecting");
        for (const chat of chats) {
            await chat.page.locator("#status.online").waitFor({ timeout: WAIT_MS });
        }
        await waitForMembers(alice, ["aliceyou", "bob"]);
        await say(bob, "back again");
        await logLine(alice, "message", "back again");
        step("pages reconnected and chat again");

        for (const chat of chats) {
            // Failed attempts while the server was down are expected.
            const unexpected = chat.problems.filter((p) => !/WebSocket connection to .* failed/.test(p));
            assert.deepEqual(unexpected, [], chat.name + ":\n" + unexpected.join("\n"));
        }
        step("ok");
    } catch (error) {
        for (const chat of chats) {
            const body = await chat.page.locator("body").innerText().catch(() => "?");
            process.stderr.write(`--- ${chat.name} page shows:\n${body}\n--- problems:\n${chat.problems.join("\n")}\n`);
            await chat.page.screenshot({ path: join(outputDir, `failure-${chat.name}.png`) }).catch(() => {});
        }
        throw error;
    } finally {
        await browser.close();
    }
}

await main();
