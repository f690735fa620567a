// A page that shows every "n" message of a room, in arrival order, and the
// connection's events: ?ws=<server URL>&room=<room name>. The client
// reconnects (and resumes) on its own.

import trioroom, { text } from "../../trioroom.js";

const params = new URLSearchParams(location.search);
const root = trioroom(params.get("ws"), { reconnectDelay: 100, reconnectJitter: 0 });
const room = root.join(params.get("room"));

const $ = (id) => document.getElementById(id);

function addEvent(line) {
    const item = document.createElement("li");
    item.textContent = line;
    $("events").append(item);
}

for (const name of ["open", "close", "reconnecting", "resumed", "resume_failed"]) {
    root.on(name, (...args) => addEvent("root " + [name, ...args].join(" ")));
    room.on(name, () => addEvent("room " + name));
}
root.on("error", (error) => addEvent("error " + error.message));
root.on("open", () => {
    $("me").textContent = root.id();
    $("extended").textContent = String(root.extended());
});
room.on("open", () => {
    $("status").textContent = "joined";
});
root.on("resumed", () => {
    $("status").textContent = "resumed";
});
room.on("close", () => {
    $("status").textContent = "closed";
});
room.on("n", (payload) => {
    const item = document.createElement("li");
    item.textContent = text(payload);
    $("log").append(item);
});
