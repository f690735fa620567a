// The trioroom demo chat: rooms, member lists, direct messages, reconnection.
//
// Messages are custom events on the wsrooms protocol:
//   "chat" {name, text}  to the room, or to one member (dst) for a direct message
//   "nick" {name}        tells the room (or a newcomer) which name goes with an ID
// The server sets each frame's src to the sender's real ID.

import trioroom, { json } from "../js/trioroom.js";
import { WS_PATH } from "./config.js";

const MAX_LINES = 300;
const $ = (id) => document.getElementById(id);

const url = new URL(WS_PATH, location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";

/** room name -> {room, lines, unread} */
const rooms = new Map();
/** member ID -> name they announced */
const names = new Map();
let myName = sessionStorage.getItem("trioroom-demo-name") || "guest-" + Math.random().toString(36).slice(2, 6);
let active = "";
/** Member ID that the composer sends direct messages to, or "". */
let target = "";

const root = trioroom(url.href);

root.on("open", () => setStatus("online", "online"));
// A resumed session keeps its rooms and fires no "open": show it online again.
root.on("resumed", () => setStatus("online", "online"));
root.on("close", () => setStatus("offline", "disconnected"));
root.on("reconnecting", (attempt, delayMs) =>
    setStatus("reconnecting", `reconnecting in ${Math.ceil(delayMs / 1000)} s (attempt ${attempt})`),
);
root.on("reconnect_failed", () => setStatus("offline", "offline: reload the page"));
root.on("error", (error) => console.warn("trioroom:", error.message));

function setStatus(kind, label) {
    const status = $("status");
    status.className = "status " + kind;
    status.textContent = label;
    renderComposer();
}

function nameOf(id) {
    if (id !== "" && id === root.id()) {
        return myName;
    }
    return names.get(id) || id.slice(0, 8);
}

function announce(room, dst) {
    if (room.open()) {
        room.send("nick", JSON.stringify({ name: myName }), dst);
    }
}

function readMessage(payload) {
    try {
        const data = json(payload);
        if (data && typeof data === "object") {
            return data;
        }
    } catch {
        // Not JSON: someone else's client. Ignore it.
    }
    return null;
}

function learnName(id, data) {
    if (data && typeof data.name === "string" && data.name.trim() !== "") {
        const name = data.name.trim().slice(0, 24);
        if (names.get(id) !== name) {
            names.set(id, name);
            renderMembers();
        }
    }
}

// -- rooms --------------------------------------------------------------------

function joinRoom(name) {
    if (!rooms.has(name)) {
        const room = root.join(name);
        const entry = { room, lines: [], unread: 0, opened: false };
        rooms.set(name, entry);
        room.on("open", () => {
            addLine(entry, "system", entry.opened ? `back in #${name}` : `you joined #${name}`);
            entry.opened = true;
            announce(room);
            renderAll();
        });
        room.on("close", () => {
            if (rooms.get(name) === entry) {
                addLine(entry, "system", "connection lost");
            }
            // Member IDs change when the connection comes back.
            if (active === name) {
                target = "";
            }
            renderAll();
        });
        room.on("new_member", (id) => {
            addLine(entry, "system", `${nameOf(id)} joined`);
            announce(room, id);
            renderMembers();
        });
        room.on("member_left", (id) => {
            addLine(entry, "system", `${nameOf(id)} left`);
            if (target === id && active === name) {
                target = "";
            }
            renderAll();
        });
        room.on("nick", (payload, senderId) => learnName(senderId, readMessage(payload)));
        room.on("chat", (payload, senderId, frame) => {
            const data = readMessage(payload);
            if (data === null || typeof data.text !== "string") {
                return;
            }
            learnName(senderId, data);
            const direct = frame.dst !== "";
            addLine(entry, direct ? "direct" : "message", data.text, direct ? `${nameOf(senderId)} → you` : nameOf(senderId));
        });
    }
    select(name);
}

function leaveRoom(name) {
    const entry = rooms.get(name);
    if (entry === undefined) {
        return;
    }
    rooms.delete(name);
    entry.room.leave();
    if (active === name) {
        const next = rooms.keys().next();
        select(next.done ? "" : next.value);
    } else {
        renderRooms();
    }
}

function select(name) {
    active = name;
    target = "";
    const entry = rooms.get(name);
    if (entry !== undefined) {
        entry.unread = 0;
    }
    if (name !== "") {
        history.replaceState(null, "", "#" + encodeURIComponent(name));
    }
    renderAll();
    $("message").focus();
}

function addLine(entry, kind, text, from = "") {
    entry.lines.push({ kind, text, from, time: new Date() });
    if (entry.lines.length > MAX_LINES) {
        entry.lines.splice(0, entry.lines.length - MAX_LINES);
    }
    if (entry === rooms.get(active)) {
        renderLog();
    } else if (kind !== "system") {
        entry.unread += 1;
        renderRooms();
    }
}

// -- rendering (textContent only: names and messages are never HTML) ------------

function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
        node.className = className;
    }
    if (text !== undefined) {
        node.textContent = text;
    }
    return node;
}

function renderAll() {
    renderRooms();
    renderLog();
    renderMembers();
    renderComposer();
}

function renderRooms() {
    const list = $("rooms");
    list.replaceChildren();
    for (const [name, entry] of rooms) {
        const item = element("li", name === active ? "active" : "");
        const open = element("button", "room", "#" + name);
        open.type = "button";
        open.addEventListener("click", () => select(name));
        item.append(open);
        if (entry.unread > 0) {
            item.append(element("span", "count", String(entry.unread)));
        }
        const leave = element("button", "leave", "×");
        leave.type = "button";
        leave.title = "Leave #" + name;
        leave.addEventListener("click", () => leaveRoom(name));
        item.append(leave);
        list.append(item);
    }
}

function renderLog() {
    const entry = rooms.get(active);
    $("room-title").textContent = entry === undefined ? "Join a room to chat" : "#" + active;
    const log = $("log");
    log.replaceChildren();
    if (entry === undefined) {
        return;
    }
    for (const line of entry.lines) {
        const item = element("li", line.kind);
        const time = line.time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        item.append(element("time", "", time));
        if (line.from) {
            item.append(element("span", "from", line.from));
        }
        item.append(element("span", "text", line.text));
        log.append(item);
    }
    log.scrollTop = log.scrollHeight;
}

function renderMembers() {
    const entry = rooms.get(active);
    const list = $("members");
    list.replaceChildren();
    const ids = entry === undefined ? [] : entry.room.members();
    $("member-count").textContent = ids.length ? String(ids.length) : "";
    const me = root.id();
    ids.sort((a, b) => (a === me ? -1 : b === me ? 1 : nameOf(a).localeCompare(nameOf(b))));
    for (const id of ids) {
        const item = element("li", id === target ? "selected" : "");
        item.dataset.id = id;
        item.title = id;
        if (id === me) {
            item.classList.add("me");
            item.append(element("span", "name", nameOf(id)), element("span", "you", "you"));
        } else {
            const button = element("button", "name", nameOf(id));
            button.type = "button";
            button.addEventListener("click", () => {
                target = target === id ? "" : id;
                renderMembers();
                renderComposer();
                $("message").focus();
            });
            item.append(button);
        }
        list.append(item);
    }
}

function renderComposer() {
    const entry = rooms.get(active);
    const ready = entry !== undefined && entry.room.open();
    $("message").disabled = !ready;
    $("send").disabled = !ready;
    $("target").hidden = target === "";
    $("target-name").textContent = target === "" ? "" : nameOf(target);
    $("message").placeholder = !ready
        ? "Not connected"
        : target === ""
          ? "Message #" + active
          : "Direct message to " + nameOf(target);
}

// -- forms ----------------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const entry = rooms.get(active);
    const input = $("message");
    const text = input.value.trim();
    if (entry === undefined || text === "" || !entry.room.open()) {
        return;
    }
    const payload = JSON.stringify({ name: myName, text });
    if (target !== "") {
        entry.room.send("chat", payload, target);
        addLine(entry, "direct", text, `you → ${nameOf(target)}`);
    } else {
        entry.room.send("chat", payload);
        addLine(entry, "message mine", text, myName);
    }
    input.value = "";
});

$("target-clear").addEventListener("click", () => {
    target = "";
    renderMembers();
    renderComposer();
});

$("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("join-name");
    const name = input.value.trim();
    if (name !== "" && name !== "root") {
        joinRoom(name);
        input.value = "";
    }
});

const nameInput = $("name");
nameInput.value = myName;
nameInput.addEventListener("change", () => {
    const name = nameInput.value.trim().slice(0, 24);
    if (name === "" || name === myName) {
        nameInput.value = myName;
        return;
    }
    myName = name;
    sessionStorage.setItem("trioroom-demo-name", name);
    for (const entry of rooms.values()) {
        announce(entry.room);
    }
    renderMembers();
});

function roomFromHash() {
    try {
        const name = decodeURIComponent(location.hash.slice(1)).trim();
        return name === "" || name === "root" ? "lobby" : name;
    } catch {
        return "lobby";
    }
}

joinRoom(roomFromHash());
