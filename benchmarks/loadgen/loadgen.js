'use strict';
// Load generator process for the trioroom benchmark suite.
//
//   node loadgen.js '<json config>'
//
// The Python runner starts one or more of these, each with a role:
//   fanout_recv  N receivers joined to one room, record delivery latency, and
//                report their progress (the seq every one of them has received)
//   fanout_send  one sender (+ one "probe" receiver that closes the send window;
//                the slowest receiver process's progress, relayed by the runner,
//                bounds how far ahead of the receivers it may get)
//   chat         connections in rooms, each sending every interval_ms
//   churn        workers doing connect -> root join_ack -> join -> close, in a loop
//   idle         open N connections, hold them until told to stop
//   dm           pairs A/B: A sends a DM to B, B answers with a DM, A measures RTT
//   verify       quick protocol conformance check of a peer
//
// Protocol with the runner: JSON lines. Out (stdout): {"type":"ready"|"connected"|
// "result"|"error"|"log", ...}. In (stdin): {"cmd":"start", t_start, m_start,
// m_end, t_stop, drain_ms} with times in microseconds of CLOCK_MONOTONIC,
// {"cmd":"stop"}, and for fanout_send {"cmd":"acked", seq} (every receiver has
// received seq and the messages before it). fanout_recv also writes
// {"type":"progress", seq} (or gone: true once all its sockets are closed). The process exits by itself at cfg.deadline_s at the latest,
// and when its stdin closes. It only ever connects to cfg.url (127.0.0.1).

const { makeClientClass, nowUs } = require('./adapters');

const cfg = JSON.parse(process.argv[2]);
const Client = makeClientClass(cfg.adapter || 'wsrooms');

if (!/^wss?:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(cfg.url)) {
  throw new Error(`refusing to load a non-loopback address: ${cfg.url}`);
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fatal(err) {
  out({ type: 'error', message: String((err && err.stack) || err) });
  process.exit(2);
}
process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);

const deadline = setTimeout(() => {
  out({ type: 'error', message: `deadline of ${cfg.deadline_s}s reached` });
  process.exit(3);
}, (cfg.deadline_s || 120) * 1000);
deadline.unref();

// ---------------------------------------------------------------- histogram
// Log-bucketed latency histogram (2% wide buckets), merged by the runner.
const HBASE = 1.02;
const HLOG = Math.log(HBASE);
const HSIZE = 1400;
class Hist {
  constructor() {
    this.c = new Float64Array(HSIZE);
    this.n = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = 0;
  }
  add(us) {
    if (!(us >= 0)) us = 0;
    let i = us < 1 ? 0 : Math.floor(Math.log(us) / HLOG) + 1;
    if (i >= HSIZE) i = HSIZE - 1;
    this.c[i]++;
    this.n++;
    this.sum += us;
    if (us < this.min) this.min = us;
    if (us > this.max) this.max = us;
  }
  toJSON() {
    const buckets = {};
    for (let i = 0; i < HSIZE; i++) if (this.c[i]) buckets[i] = this.c[i];
    return { base: HBASE, n: this.n, sum: this.sum, min: this.n ? this.min : null, max: this.max, buckets };
  }
}

// ---------------------------------------------------------------- helpers
async function pool(n, concurrency, fn) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(concurrency, n); w++) {
    workers.push((async () => {
      while (next < n) {
        const k = next++;
        await fn(k);
      }
    })());
  }
  await Promise.all(workers);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function sleepUntil(tUs) {
  return sleep(Math.max(0, (tUs - nowUs()) / 1000));
}

// After t_stop: wait at least drain_ms, then until nothing arrived for 0.5 s
// (a backlog still in flight is not "lost"), at most max_drain_ms.
let lastRecv = 0;
async function drain(cmd) {
  await sleepUntil(cmd.t_stop + cmd.drain_ms * 1000);
  const maxEnd = cmd.t_stop + (cmd.max_drain_ms || 15000) * 1000;
  while (nowUs() < maxEnd && nowUs() - lastRecv < 500000) await sleep(50);
  return (nowUs() - cmd.t_stop) / 1e6;
}

const cpu0 = process.cpuUsage();
const wall0 = nowUs();
function cpuReport(fromCpu, fromWall) {
  const c = process.cpuUsage(fromCpu);
  const wall = (nowUs() - fromWall) / 1e6;
  const s = (c.user + c.system) / 1e6;
  return { cpu_s: s, wall_s: wall, cpu_pct: wall > 0 ? (100 * s) / wall : 0 };
}

let startCmd = null;
let onCmd = null; // role-specific handler of other commands
let startResolve;
const started = new Promise((r) => { startResolve = r; });
let stopResolve;
const stopped = new Promise((r) => { stopResolve = r; });

let inbuf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  inbuf += chunk;
  let i;
  while ((i = inbuf.indexOf('\n')) >= 0) {
    const line = inbuf.slice(0, i).trim();
    inbuf = inbuf.slice(i + 1);
    if (!line) continue;
    const cmd = JSON.parse(line);
    if (cmd.cmd === 'start') {
      startCmd = cmd;
      startResolve(cmd);
    } else if (cmd.cmd === 'stop') {
      stopResolve(cmd);
    } else if (onCmd) {
      onCmd(cmd);
    }
  }
});
process.stdin.on('end', () => {
  // The runner went away: stop (the verify role needs no commands).
  if (cfg.role !== 'verify') process.exit(4);
});

function finish(result) {
  out({ type: 'result', role: cfg.role, pid: process.pid, cpu: cpuReport(cpu0, wall0), ...result });
  // Let stdout flush, then exit (the OS closes the sockets).
  setTimeout(() => process.exit(0), 50);
}

// Measure this process's CPU over the measured window only.
async function windowCpu(cmd) {
  await sleepUntil(cmd.m_start);
  const c = process.cpuUsage();
  const w = nowUs();
  await sleepUntil(cmd.m_end);
  return cpuReport(c, w);
}

async function connectAll(n, concurrency, setup, opts) {
  const clients = new Array(n);
  let failed = 0;
  const errors = {};
  await pool(n, concurrency, async (k) => {
    const c = new Client(cfg.url, opts);
    try {
      await c.connect();
      if (setup) await setup(c, k);
      clients[k] = c;
    } catch (e) {
      failed++;
      const m = String(e && e.message);
      errors[m] = (errors[m] || 0) + 1;
      c.terminate();
    }
  });
  return { clients: clients.filter(Boolean), failed, errors };
}

// ---------------------------------------------------------------- roles
const roles = {};

roles.fanout_recv = async () => {
  const hist = new Hist();
  let total = 0;
  let inWindowByRecv = 0;
  let mStart = Infinity;
  let mEnd = -Infinity;
  const onMessage = (c, payload) => {
    const t = nowUs();
    lastRecv = t;
    total++;
    if (t >= mStart && t < mEnd) inWindowByRecv++;
    const ts = Client.readTs(payload);
    if (ts >= mStart && ts < mEnd) hist.add(t - ts);
    c.seq = Client.readSeq(payload); // in order on one connection
  };
  const { clients, failed, errors } = await connectAll(cfg.count, cfg.concurrency || 50, async (c) => {
    c.seq = -1;
    c.onMessage = (room, src, payload) => onMessage(c, payload);
    await c.join(cfg.room);
  });
  out({ type: 'ready', connected: clients.length, failed, errors });
  // Progress for the sender's flow control: the highest seq that every open
  // socket of this process has received. A timer, so a busy process (whose
  // timers fire late) reports late and holds the sender back.
  let reported = -1;
  let gone = false;
  const progress = setInterval(() => {
    let min = Infinity;
    for (const c of clients) if (!c.closed && c.seq < min) min = c.seq;
    if (min === Infinity) {
      if (!gone) out({ type: 'progress', gone: true });
      gone = true;
    } else if (min > reported) {
      reported = min;
      out({ type: 'progress', seq: min });
    }
  }, cfg.report_ms || 5);
  const cmd = await started;
  mStart = cmd.m_start;
  mEnd = cmd.m_end;
  const cpu = await windowCpu(cmd);
  const drainS = await drain(cmd);
  clearInterval(progress);
  const closedEarly = clients.filter((c) => c.closed).length;
  finish({ received_total: total, received_in_window: inWindowByRecv, closed_early: closedEarly, hist, window_cpu: cpu, drain_s: drainS });
};

roles.fanout_send = async () => {
  const sender = new Client(cfg.url);
  await sender.connect();
  await sender.join(cfg.room);
  const probe = new Client(cfg.url);
  await probe.connect();
  await probe.join(cfg.room); // joins last: the last member the server fans out to
  const hist = new Hist();
  let sent = 0;
  let sentInWindow = 0;
  let acked = 0; // the probe has received every seq below this
  let recvAcked = 0; // every receiver process has received every seq below this
  let heldByRecv = 0; // times the receivers' lag (not the probe) closed the window
  let probeTotal = 0;
  let probeInWindow = 0;
  let stalls = 0;
  let lastProgress = nowUs();
  let running = false;
  let tStop = 0;
  let mStart = Infinity;
  let mEnd = -Infinity;
  const window = cfg.window || 8;
  // Unlimited without receiver processes (a room of the sender and the probe).
  const lagWindow = cfg.lag_window || Infinity;
  const size = cfg.payload_size || 64;

  const pump = () => {
    if (!running) return;
    while (sent - acked < window) {
      if (sent - recvAcked >= lagWindow) {
        heldByRecv++;
        return;
      }
      const t = nowUs();
      if (t >= tStop) {
        running = false;
        return;
      }
      if (t >= mStart && t < mEnd) sentInWindow++;
      sender.sendBench(cfg.room, 'bench', t, sent, size);
      sent++;
    }
  };
  probe.onMessage = (room, src, payload) => {
    const t = nowUs();
    lastRecv = t;
    probeTotal++;
    const ts = Client.readTs(payload);
    if (ts >= mStart && ts < mEnd) {
      probeInWindow++;
      hist.add(t - ts);
    }
    const seq = Client.readSeq(payload);
    if (seq + 1 > acked) acked = seq + 1;
    lastProgress = t;
    pump();
  };
  onCmd = (c) => {
    if (c.cmd !== 'acked' || c.seq + 1 <= recvAcked) return;
    recvAcked = c.seq + 1;
    lastProgress = nowUs();
    pump();
  };
  out({ type: 'ready', sender: sender.id, probe: probe.id });
  const cmd = await started;
  mStart = cmd.m_start;
  mEnd = cmd.m_end;
  tStop = cmd.t_stop;
  await sleepUntil(cmd.t_start);
  running = true;
  lastProgress = nowUs();
  const guard = setInterval(() => {
    // If the window stays shut without progress for 1 s (a drop, a
    // disconnect, a stuck receiver process), reopen it.
    if (running && (sent > acked || sent > recvAcked) && nowUs() - lastProgress > 1e6) {
      stalls++;
      acked = sent;
      recvAcked = sent;
      lastProgress = nowUs();
      pump();
    }
  }, 100);
  pump();
  const cpu = await windowCpu(cmd);
  const drainS = await drain(cmd);
  clearInterval(guard);
  finish({
    sent,
    sent_in_window: sentInWindow,
    received_total: probeTotal,
    received_in_window: probeInWindow,
    stalls,
    held_by_receivers: heldByRecv,
    closed_early: (sender.closed ? 1 : 0) + (probe.closed ? 1 : 0),
    hist,
    window_cpu: cpu,
    drain_s: drainS,
  });
};

roles.chat = async () => {
  // cfg.rooms: room name for each of this process's connections.
  const rooms = cfg.rooms;
  const interval = cfg.interval_ms;
  const size = cfg.payload_size || 64;
  const hist = new Hist();
  const lag = new Hist();
  const sentByRoom = {};
  const recvByRoom = {};
  let recvTotal = 0;
  let sentTotal = 0;
  let mStart = Infinity;
  let mEnd = -Infinity;
  const { clients, failed, errors } = await connectAll(rooms.length, cfg.concurrency || 50, async (c, k) => {
    c.room = rooms[k];
    c.onMessage = (room, src, payload) => {
      const t = nowUs();
      lastRecv = t;
      recvTotal++;
      const ts = Client.readTs(payload);
      if (ts >= mStart && ts < mEnd) {
        hist.add(t - ts);
        recvByRoom[room] = (recvByRoom[room] || 0) + 1;
      }
    };
    await c.join(c.room);
  });
  out({ type: 'ready', connected: clients.length, failed, errors, rooms: clients.map((c) => c.room) });
  const cmd = await started;
  mStart = cmd.m_start;
  mEnd = cmd.m_end;
  const tStop = cmd.t_stop;
  const intervalUs = interval * 1000;
  for (const c of clients) {
    let due = cmd.t_start + Math.random() * intervalUs;
    let seq = 0;
    const tick = () => {
      const t = nowUs();
      if (t >= tStop || c.closed) return;
      lag.add(t - due);
      if (t >= mStart && t < mEnd) sentByRoom[c.room] = (sentByRoom[c.room] || 0) + 1;
      c.sendBench(c.room, 'chat', t, seq++, size);
      sentTotal++;
      due += intervalUs;
      // If the generator fell behind, do not burst to catch up.
      if (due < t) due = t;
      setTimeout(tick, Math.max(0, (due - nowUs()) / 1000));
    };
    setTimeout(tick, Math.max(0, (due - nowUs()) / 1000));
  }
  const cpu = await windowCpu(cmd);
  const drainS = await drain(cmd);
  finish({
    drain_s: drainS,
    sent_total: sentTotal,
    recv_total: recvTotal,
    sent_by_room: sentByRoom,
    recv_by_room: recvByRoom,
    closed_early: clients.filter((c) => c.closed).length,
    hist,
    send_lag: lag,
    window_cpu: cpu,
  });
};

roles.churn = async () => {
  const hist = new Hist();
  let cycles = 0;
  let cyclesInWindow = 0;
  let errorsN = 0;
  const errors = {};
  out({ type: 'ready' });
  const cmd = await started;
  await sleepUntil(cmd.t_start);
  const worker = async (w) => {
    const room = `churn-${process.pid}-${w % (cfg.rooms || 1e9)}`;
    while (nowUs() < cmd.t_stop) {
      const t0 = nowUs();
      const c = new Client(cfg.url);
      try {
        await c.connect(5000);
        await c.join(room, 5000);
        await c.close(5000);
        const t1 = nowUs();
        cycles++;
        if (t1 >= cmd.m_start && t1 < cmd.m_end) {
          cyclesInWindow++;
          hist.add(t1 - t0);
        }
      } catch (e) {
        errorsN++;
        const m = String(e && e.message);
        errors[m] = (errors[m] || 0) + 1;
        c.terminate();
        await sleep(10);
      }
    }
  };
  const workers = [];
  for (let w = 0; w < cfg.concurrency; w++) workers.push(worker(w));
  const cpu = await windowCpu(cmd);
  await Promise.all(workers);
  finish({ cycles, cycles_in_window: cyclesInWindow, errors_n: errorsN, errors, hist, window_cpu: cpu });
};

roles.idle = async () => {
  out({ type: 'ready' });
  const cmd = await started;
  await sleepUntil(cmd.t_start);
  const hist = new Hist();
  const t0 = nowUs();
  const { clients, failed, errors } = await connectAll(cfg.count, cfg.concurrency || 100, async (c) => {
    hist.add(nowUs() - t0);
  });
  const tDone = nowUs();
  out({ type: 'connected', connected: clients.length, failed, errors, t_done: tDone, setup_s: (tDone - t0) / 1e6 });
  await stopped;
  const closedEarly = clients.filter((c) => c.closed).length;
  finish({ connected: clients.length, failed, errors, closed_early: closedEarly, t_done: tDone, hist });
};

roles.dm = async () => {
  const pairs = cfg.pairs;
  const size = cfg.payload_size || 64;
  const room = cfg.room || 'root';
  const hist = new Hist();
  let roundTrips = 0;
  let inWindow = 0;
  let running = false;
  let mStart = Infinity;
  let mEnd = -Infinity;
  let tStop = 0;
  const bs = await connectAll(pairs, 50, async (c) => {
    c.onMessage = (r, src, payload) => c.replyDm(r, src, payload);
  }, { wantSrc: true });
  const as = await connectAll(pairs, 50, null);
  if (bs.clients.length !== pairs || as.clients.length !== pairs) {
    throw new Error(`dm: could not connect all pairs (${as.failed + bs.failed} failed)`);
  }
  const seqs = new Array(pairs).fill(0);
  as.clients.forEach((a, k) => {
    const b = bs.clients[k];
    a.onMessage = (r, src, payload) => {
      const t = nowUs();
      lastRecv = t;
      roundTrips++;
      const ts = Client.readTs(payload);
      if (ts >= mStart && ts < mEnd) {
        inWindow++;
        hist.add(t - ts);
      }
      if (running && t < tStop) a.sendDm(room, b.id, t, seqs[k]++, size);
    };
  });
  out({ type: 'ready', pairs });
  const cmd = await started;
  mStart = cmd.m_start;
  mEnd = cmd.m_end;
  tStop = cmd.t_stop;
  await sleepUntil(cmd.t_start);
  running = true;
  as.clients.forEach((a, k) => a.sendDm(room, bs.clients[k].id, nowUs(), seqs[k]++, size));
  const cpu = await windowCpu(cmd);
  await drain(cmd);
  running = false;
  finish({ round_trips: roundTrips, round_trips_in_window: inWindow, hist, window_cpu: cpu });
};

roles.verify = async () => {
  // Protocol conformance of a peer: join_ack first, broadcast excludes the
  // sender and carries the sender's real id, DMs get src rewritten.
  const checks = [];
  const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail: detail === undefined ? null : detail });
  const adapter = cfg.adapter || 'wsrooms';
  check(`client: ${adapter}`, true);
  const mk = () => {
    const c = new Client(cfg.url, {
      wantSrc: true,
      onRaw: (f, isBinary) => {
        c.frames = c.frames || [];
        c.frames.push({ f, isBinary });
      },
    });
    c.got = [];
    c.onMessage = (room, src, payload, event, dst) => c.got.push({ room, src, payload: String(payload), event, dst });
    return c;
  };
  const A = mk();
  const B = mk();
  const C = mk();
  const idA = await A.connect();
  const idB = await B.connect();
  const idC = await C.connect();
  if (adapter !== 'socketio') {
    const first = A.frames[0];
    check('first frame is binary', first.isBinary);
    check('first frame is root join_ack', first.f && first.f[0] === 'root' && first.f[1] === 'join_ack', first.f && first.f.slice(0, 4));
    check('join_ack src is a 36-char id', typeof idA === 'string' && idA.length === 36, idA);
    let members = null;
    try { members = JSON.parse(String(first.f[4])); } catch (e) { /* checked below */ }
    check('root join_ack payload is a JSON array of strings', Array.isArray(members) && members.every((m) => typeof m === 'string'), String(first.f[4]).slice(0, 80));
  } else {
    check('socket.io connect gives an id', typeof idA === 'string' && idA.length > 0, idA);
  }
  check('ids are distinct', new Set([idA, idB, idC]).size === 3);
  await A.join('vroom');
  await B.join('vroom');
  await sleep(100);
  A.sendRaw('vroom', 'hello', '', 'forged-src', 'payload-1');
  await sleep(300);
  const bGot = B.got.filter((m) => m.event === 'hello');
  check('broadcast reaches the other member', bGot.length === 1, bGot);
  check('broadcast src is the sender id (not the client-sent src)', bGot.length === 1 && bGot[0].src === idA, bGot[0] && bGot[0].src);
  check('broadcast keeps room and payload', bGot.length === 1 && bGot[0].room === 'vroom' && bGot[0].payload === 'payload-1');
  check('broadcast excludes the sender', A.got.filter((m) => m.event === 'hello').length === 0);
  check('non-member gets no broadcast', C.got.filter((m) => m.event === 'hello').length === 0);
  // On root: a DM on a room the sender is not in is refused by trioroom.
  C.sendRaw('root', 'whisper', idA, 'spoofed', 'dm-1');
  await sleep(300);
  const aDm = A.got.filter((m) => m.payload === 'dm-1');
  check('DM delivered to dst', aDm.length === 1, aDm);
  check('DM src rewritten to the real sender', aDm.length === 1 && aDm[0].src === idC, aDm[0] && aDm[0].src);
  check('DM not delivered to others', B.got.filter((m) => m.payload === 'dm-1').length === 0);
  if (adapter !== 'socketio') {
    const nonBinary = [A, B, C].flatMap((c) => c.frames).filter((x) => !x.isBinary).length;
    check('server sent binary frames only', nonBinary === 0, nonBinary);
  }
  for (const c of [A, B, C]) c.terminate();
  finish({ checks, ok: checks.every((c) => c.ok) });
};

if (!roles[cfg.role]) fatal(new Error(`unknown role ${cfg.role}`));
roles[cfg.role]().catch(fatal);
