// A tiny chat page: ?ws=<server URL>&room=<room name>. It shows what a person would see.

import trioroom, { text } from "../../trioroom.js";

const params = new URLSearchParams(location.search);
const root = trioroom(params.get("ws"), { reconnect: false });
const room = root.join(params.get("room"));

const me = document.getElementById("me");
const status = document.getElementById("status");
const members = document.getElementById("members");
const log = document.getElementById("log");

function addLine(line) {
    const item = document.createElement("li");
    item.textContent = line;
    log.append(item);
}

function showMembers() {
    members.textContent = room.members().slice().sort().join(" ");
}

root.on("error", (error) => addLine("error: " + error.message));
root.on("open", () => {
    me.textContent = root.id();
});
room.on("open", () => {
    status.textContent = "joined";
    showMembers();
});
room.on("close", () => {
    status.textContent = "closed";
});
room.on("new_member", (id) => {
    addLine("joined: " + id);
    showMembers();
});
room.on("member_left", (id) => {
    addLine("left: " + id);
    showMembers();
});
room.on("chat", (payload, senderId) => {
    addLine(senderId + ": " + text(payload));
});

document.getElementById("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("message");
    room.send("chat", input.value);
    addLine("me: " + input.value);
    input.value = "";
});
