'use strict';
// Client adapters used by the load generator.
//
// Both adapters expose the same small surface:
//   connect()                 -> Promise<id>   (resolves once the server told us our id)
//   join(room)                -> Promise       (resolves on our join_ack for room)
//   sendBench(room, event, ts, seq, size)      broadcast to the room (server excludes us)
//   sendDm(room, dst, ts, seq, size)           direct message to dst
//   close()                   -> Promise       (resolves when the connection is closed)
//   terminate()
//   onMessage = (room, src, payload) => {}     custom events only (not join_ack & co)
// and static helpers readTs(payload) / readSeq(payload).
//
// WsroomsClient speaks the binary wsrooms protocol over `ws` (bufferutil is
// picked up by ws automatically). SioClient speaks socket.io (websocket
// transport only) to the python-socketio peer, with the same room semantics
// expressed as socket.io events.

const WebSocket = require('ws');

function nowUs() {
  // process.hrtime is CLOCK_MONOTONIC on Linux: one clock for every process
  // on the machine, and the same clock as Python's time.monotonic_ns().
  return Number(process.hrtime.bigint()) / 1e3;
}

function encodeFrame(room, event, dst, src, payload) {
  const parts = [room, event, dst, src].map((s) => Buffer.from(s, 'utf8'));
  const pl = Buffer.isBuffer(payload) ? payload : Buffer.from(payload || '', 'utf8');
  let total = 20;
  for (const p of parts) total += p.length;
  total += pl.length;
  const b = Buffer.allocUnsafe(total);
  let o = 0;
  for (const p of [...parts, pl]) {
    b.writeUInt32BE(p.length, o);
    o += 4;
    p.copy(b, o);
    o += p.length;
  }
  return b;
}

// Parse a frame into [room, event, dst, src, payload(Buffer)]; null if malformed.
function decodeFrame(buf) {
  const out = new Array(5);
  let o = 0;
  const L = buf.length;
  for (let i = 0; i < 5; i++) {
    if (o + 4 > L) return null;
    const n = buf.readUInt32BE(o);
    o += 4;
    if (o + n > L) return null;
    out[i] = i < 4 ? buf.toString('utf8', o, o + n) : buf.subarray(o, o + n);
    o += n;
  }
  if (o !== L) return null;
  return out;
}

const BENCH_MIN = 12; // float64 timestamp (us) + u32 sequence number

class WsroomsClient {
  constructor(url, opts = {}) {
    this.url = url;
    this.id = null;
    this.ws = null;
    this.onMessage = null;
    this.onRaw = opts.onRaw || null; // (fields, isBinary) for protocol checks
    this.joinWaiters = new Map();
    this.prefixes = new Map();
    this.closed = false;
    this._closeWaiters = [];
  }

  connect(timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.url, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
      this.ws = ws;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      const timer = setTimeout(() => {
        fail(new Error('connect timeout'));
        ws.terminate();
      }, timeoutMs);
      this._rootAck = (id) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(id);
      };
      ws.on('message', (data, isBinary) => this._onFrame(data, isBinary));
      ws.on('error', (e) => fail(e));
      ws.on('close', () => {
        this.closed = true;
        fail(new Error('closed before root join_ack'));
        for (const w of this._closeWaiters) w();
        this._closeWaiters = [];
        for (const [, w] of this.joinWaiters) w.reject(new Error('closed'));
        this.joinWaiters.clear();
      });
    });
  }

  _onFrame(buf, isBinary) {
    const f = decodeFrame(buf);
    if (this.onRaw) this.onRaw(f, isBinary);
    if (f === null) return;
    const event = f[1];
    if (event === 'join_ack') {
      if (this.id === null && f[0] === 'root') {
        this.id = f[3];
        this._rootAck(this.id);
      } else if (f[3] === this.id) {
        const w = this.joinWaiters.get(f[0]);
        if (w) {
          this.joinWaiters.delete(f[0]);
          w.resolve(f[4]);
        }
      }
      return;
    }
    if (event === 'new_member' || event === 'member_left' || event === 'leave_ack') return;
    if (this.onMessage) this.onMessage(f[0], f[3], f[4], event, f[2]);
  }

  join(room, timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.joinWaiters.delete(room);
        reject(new Error('join timeout'));
      }, timeoutMs);
      this.joinWaiters.set(room, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.ws.send(encodeFrame(room, 'join', '', '', ''));
    });
  }

  sendRaw(room, event, dst, src, payload) {
    this.ws.send(encodeFrame(room, event, dst, src, payload));
  }

  _prefix(room, event, dst) {
    const key = room + '\0' + event + '\0' + dst;
    let p = this.prefixes.get(key);
    if (!p) {
      const full = encodeFrame(room, event, dst, this.id || '', Buffer.alloc(0));
      p = full.subarray(0, full.length - 4);
      this.prefixes.set(key, p);
    }
    return p;
  }

  _benchFrame(room, event, dst, ts, seq, size) {
    const p = this._prefix(room, event, dst);
    const n = Math.max(size, BENCH_MIN);
    const b = Buffer.allocUnsafe(p.length + 4 + n);
    p.copy(b, 0);
    let o = p.length;
    b.writeUInt32BE(n, o);
    o += 4;
    b.writeDoubleBE(ts, o);
    b.writeUInt32BE(seq >>> 0, o + 8);
    b.fill(0x61, o + 12);
    return b;
  }

  sendBench(room, event, ts, seq, size) {
    this.ws.send(this._benchFrame(room, event, '', ts, seq, size));
  }

  sendDm(room, dst, ts, seq, size) {
    this.ws.send(this._benchFrame(room, 'dm', dst, ts, seq, size));
  }

  // Echo a received bench payload back as a DM (used by the DM responder).
  replyDm(room, dst, payload) {
    const p = this._prefix(room, 'dm', dst);
    const b = Buffer.allocUnsafe(p.length + 4 + payload.length);
    p.copy(b, 0);
    b.writeUInt32BE(payload.length, p.length);
    payload.copy(b, p.length + 4);
    this.ws.send(b);
  }

  bufferedAmount() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  close(timeoutMs = 5000) {
    if (this.closed || !this.ws) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, timeoutMs);
      this._closeWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.close(1000);
    });
  }

  terminate() {
    if (this.ws) this.ws.terminate();
  }

  static readTs(payload) {
    return payload.length >= BENCH_MIN ? payload.readDoubleBE(0) : NaN;
  }

  static readSeq(payload) {
    return payload.length >= BENCH_MIN ? payload.readUInt32BE(8) : -1;
  }
}

// socket.io flavour of the same semantics:
//   client -> server: 'join' (room); 'msg' (room, event, payload); 'dm' (dst, room, payload)
//   server -> client: 'join_ack' (room, id, members); 'new_member' (room, id);
//                     'msg' (room, event, src, payload)
// Payloads are strings: "<ts>:<seq>:" padded with 'a' to the wanted size.
class SioClient {
  constructor(url) {
    // url is the ws://host:port/ws URL of the peer; socket.io lives at /socket.io/
    const u = new URL(url);
    this.base = `http://${u.host}`;
    this.id = null;
    this.socket = null;
    this.onMessage = null;
    this.joinWaiters = new Map();
    this.closed = false;
  }

  connect(timeoutMs = 15000) {
    const { io } = require('socket.io-client');
    return new Promise((resolve, reject) => {
      let settled = false;
      const s = io(this.base, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
        timeout: timeoutMs,
        perMessageDeflate: false,
      });
      this.socket = s;
      const timer = setTimeout(() => {
        if (!settled) {
          settled = true;
          reject(new Error('connect timeout'));
          s.disconnect();
        }
      }, timeoutMs);
      s.on('connect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.id = s.id;
        resolve(s.id);
      });
      s.on('connect_error', (e) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(e);
      });
      s.on('disconnect', () => {
        this.closed = true;
        for (const [, w] of this.joinWaiters) w.reject(new Error('closed'));
        this.joinWaiters.clear();
      });
      s.on('join_ack', (room, id) => {
        if (id !== this.id) return;
        const w = this.joinWaiters.get(room);
        if (w) {
          this.joinWaiters.delete(room);
          w.resolve();
        }
      });
      s.on('msg', (room, event, src, payload) => {
        if (this.onMessage) this.onMessage(room, src, payload, event, '');
      });
    });
  }

  join(room, timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.joinWaiters.delete(room);
        reject(new Error('join timeout'));
      }, timeoutMs);
      this.joinWaiters.set(room, {
        resolve: () => { clearTimeout(timer); resolve(); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.socket.emit('join', room);
    });
  }

  static payload(ts, seq, size) {
    const head = `${ts.toFixed(1)}:${seq}:`;
    return head.length >= size ? head : head + 'a'.repeat(size - head.length);
  }

  sendRaw(room, event, dst, src, payload) {
    if (dst) this.socket.emit('dm', dst, room, String(payload));
    else this.socket.emit('msg', room, event, String(payload));
  }

  sendBench(room, event, ts, seq, size) {
    this.socket.emit('msg', room, event, SioClient.payload(ts, seq, size));
  }

  sendDm(room, dst, ts, seq, size) {
    this.socket.emit('dm', dst, room, SioClient.payload(ts, seq, size));
  }

  replyDm(room, dst, payload) {
    this.socket.emit('dm', dst, room, payload);
  }

  bufferedAmount() {
    return 0;
  }

  close(timeoutMs = 5000) {
    if (this.closed || !this.socket) return Promise.resolve();
    return new Promise((resolve) => {
      // Wait for the underlying engine.io transport to be closed.
      const engine = this.socket.io.engine;
      const timer = setTimeout(resolve, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      if (engine) engine.once('close', done);
      this.socket.disconnect();
      if (!engine) done();
    });
  }

  terminate() {
    if (this.socket) this.socket.disconnect();
  }

  static readTs(payload) {
    return parseFloat(payload);
  }

  static readSeq(payload) {
    const i = payload.indexOf(':');
    return i < 0 ? -1 : parseInt(payload.slice(i + 1), 10);
  }
}


// ------------------------------------------------------------------ raw client
// A minimal RFC 6455 client on a bare net.Socket, for the load roles. It parses
// the server's frames straight out of the TCP chunks (no per-message stream or
// event machinery) and masks its own frames with bufferutil: several times less
// CPU per message than the `ws` client, which keeps the single generator core
// from becoming the bottleneck. Same surface as WsroomsClient.
const net = require('net');
const crypto = require('crypto');
let bufferutil = null;
try {
  bufferutil = require('bufferutil');
} catch (e) {
  bufferutil = null;
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
let maskPool = Buffer.alloc(0);
let maskOff = 0;
function maskKey() {
  if (maskOff + 4 > maskPool.length) {
    maskPool = crypto.randomBytes(8192);
    maskOff = 0;
  }
  const k = maskPool.subarray(maskOff, maskOff + 4);
  maskOff += 4;
  return k;
}

function wsFrame(opcode, payload) {
  const n = payload.length;
  const h = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(h + 4 + n);
  out[0] = 0x80 | opcode;
  if (h === 2) {
    out[1] = 0x80 | n;
  } else if (h === 4) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(n), 2);
  }
  const key = maskKey();
  key.copy(out, h);
  if (bufferutil && n >= 32) {
    bufferutil.mask(payload, key, out, h + 4, n);
  } else {
    for (let i = 0; i < n; i++) out[h + 4 + i] = payload[i] ^ key[i & 3];
  }
  return out;
}

class RawWsroomsClient {
  constructor(url, opts = {}) {
    const u = new URL(url);
    this.host = u.hostname;
    this.port = Number(u.port);
    this.path = u.pathname + u.search;
    this.id = null;
    this.sock = null;
    this.onMessage = null;
    this.onRaw = opts.onRaw || null;
    this.wantSrc = !!opts.wantSrc;
    this.joinWaiters = new Map();
    this.prefixes = new Map();
    this.closed = false;
    this._closeWaiters = [];
    this._pending = null;
    this._frag = null;
    this._hs = true;
  }

  connect(timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
        if (this.sock) this.sock.destroy();
      };
      const timer = setTimeout(() => fail(new Error('connect timeout')), timeoutMs);
      this._rootAck = (id) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(id);
      };
      const key = crypto.randomBytes(16).toString('base64');
      this._accept = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
      const sock = net.connect({ host: this.host, port: this.port });
      this.sock = sock;
      sock.setNoDelay(true);
      sock.on('connect', () => {
        sock.write(
          `GET ${this.path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
          'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
      });
      sock.on('data', (chunk) => {
        try {
          this._onData(chunk);
        } catch (e) {
          fail(e);
          sock.destroy();
        }
      });
      sock.on('error', (e) => fail(e));
      sock.on('close', () => {
        this.closed = true;
        fail(new Error('closed before root join_ack'));
        for (const w of this._closeWaiters) w();
        this._closeWaiters = [];
        for (const [, w] of this.joinWaiters) w.reject(new Error('closed'));
        this.joinWaiters.clear();
      });
    });
  }

  _onData(chunk) {
    if (this._pending !== null) {
      chunk = Buffer.concat([this._pending, chunk]);
      this._pending = null;
    }
    let o = 0;
    if (this._hs) {
      const end = chunk.indexOf('\r\n\r\n');
      if (end < 0) {
        this._pending = chunk;
        return;
      }
      const head = chunk.toString('latin1', 0, end);
      if (!/^HTTP\/1\.1 101/.test(head)) throw new Error(`handshake refused: ${head.split('\r\n')[0]}`);
      const m = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head);
      if (!m || m[1] !== this._accept) throw new Error('bad Sec-WebSocket-Accept');
      this._hs = false;
      o = end + 4;
    }
    const L = chunk.length;
    while (L - o >= 2) {
      const b0 = chunk[o];
      const b1 = chunk[o + 1];
      let len = b1 & 0x7f;
      let h = 2;
      if (len === 126) {
        if (L - o < 4) break;
        len = chunk.readUInt16BE(o + 2);
        h = 4;
      } else if (len === 127) {
        if (L - o < 10) break;
        len = Number(chunk.readBigUInt64BE(o + 2));
        h = 10;
      }
      if (b1 & 0x80) throw new Error('masked frame from the server');
      if (L - o < h + len) break;
      const start = o + h;
      const end = start + len;
      o = end;
      const op = b0 & 0x0f;
      const fin = (b0 & 0x80) !== 0;
      if (op === 2 || op === 1) {
        if (fin) this._onMsg(chunk, start, end, op === 2);
        else this._frag = { parts: [Buffer.from(chunk.subarray(start, end))], binary: op === 2 };
      } else if (op === 0) {
        if (!this._frag) throw new Error('unexpected continuation');
        this._frag.parts.push(Buffer.from(chunk.subarray(start, end)));
        if (fin) {
          const whole = Buffer.concat(this._frag.parts);
          const binary = this._frag.binary;
          this._frag = null;
          this._onMsg(whole, 0, whole.length, binary);
        }
      } else if (op === 9) {
        this.sock.write(wsFrame(10, chunk.subarray(start, end)));
      } else if (op === 8) {
        if (!this._closing) {
          this._closing = true;
          this.sock.write(wsFrame(8, chunk.subarray(start, Math.min(end, start + 2))));
        }
        this.sock.end();
      }
    }
    if (o < L) this._pending = chunk.subarray(o);
  }

  _onMsg(buf, s, e, isBinary) {
    // room | event | dst | src | payload, each u32-BE length prefixed.
    let o = s;
    const rl = buf.readUInt32BE(o);
    const rs = o + 4;
    o = rs + rl;
    const el = buf.readUInt32BE(o);
    const es = o + 4;
    o = es + el;
    const dl = buf.readUInt32BE(o);
    const ds = o + 4;
    o = ds + dl;
    const sl = buf.readUInt32BE(o);
    const ss = o + 4;
    o = ss + sl;
    const pl = buf.readUInt32BE(o);
    const ps = o + 4;
    if (ps + pl !== e) throw new Error('malformed wsrooms frame');
    if (this.onRaw) {
      this.onRaw([
        buf.toString('utf8', rs, rs + rl), buf.toString('utf8', es, es + el),
        buf.toString('utf8', ds, ds + dl), buf.toString('utf8', ss, ss + sl),
        buf.subarray(ps, ps + pl),
      ], isBinary);
    }
    // Membership events are 8..11 bytes long; decode the event name only then.
    if (el >= 8 && el <= 11) {
      const event = buf.toString('latin1', es, es + el);
      if (event === 'join_ack') {
        const room = buf.toString('utf8', rs, rs + rl);
        const src = buf.toString('latin1', ss, ss + sl);
        if (this.id === null && room === 'root') {
          this.id = src;
          this._rootAck(src);
        } else if (src === this.id) {
          const w = this.joinWaiters.get(room);
          if (w) {
            this.joinWaiters.delete(room);
            w.resolve(buf.subarray(ps, ps + pl));
          }
        }
        return;
      }
      if (event === 'new_member' || event === 'member_left' || event === 'leave_ack') return;
    }
    if (this.onMessage) {
      this.onMessage(
        buf.toString('latin1', rs, rs + rl),
        this.wantSrc ? buf.toString('latin1', ss, ss + sl) : '',
        buf.subarray(ps, ps + pl),
        this.wantSrc ? buf.toString('latin1', es, es + el) : '',
        '',
      );
    }
  }

  join(room, timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.joinWaiters.delete(room);
        reject(new Error('join timeout'));
      }, timeoutMs);
      this.joinWaiters.set(room, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (err) => { clearTimeout(timer); reject(err); },
      });
      this.sock.write(wsFrame(2, encodeFrame(room, 'join', '', '', '')));
    });
  }

  sendRaw(room, event, dst, src, payload) {
    this.sock.write(wsFrame(2, encodeFrame(room, event, dst, src, payload)));
  }

  sendBench(room, event, ts, seq, size) {
    this.sock.write(wsFrame(2, WsroomsClient.prototype._benchFrame.call(this, room, event, '', ts, seq, size)));
  }

  sendDm(room, dst, ts, seq, size) {
    this.sock.write(wsFrame(2, WsroomsClient.prototype._benchFrame.call(this, room, 'dm', dst, ts, seq, size)));
  }

  replyDm(room, dst, payload) {
    const p = this._prefix(room, 'dm', dst);
    const b = Buffer.allocUnsafe(p.length + 4 + payload.length);
    p.copy(b, 0);
    b.writeUInt32BE(payload.length, p.length);
    payload.copy(b, p.length + 4);
    this.sock.write(wsFrame(2, b));
  }

  _prefix(room, event, dst) {
    return WsroomsClient.prototype._prefix.call(this, room, event, dst);
  }

  bufferedAmount() {
    return this.sock ? this.sock.writableLength : 0;
  }

  close(timeoutMs = 5000) {
    if (this.closed || !this.sock) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.sock.destroy();
        resolve();
      }, timeoutMs);
      this._closeWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
      if (!this._closing) {
        this._closing = true;
        const code = Buffer.alloc(2);
        code.writeUInt16BE(1000, 0);
        this.sock.write(wsFrame(8, code));
      }
    });
  }

  terminate() {
    if (this.sock) this.sock.destroy();
  }

  static readTs(payload) {
    return WsroomsClient.readTs(payload);
  }

  static readSeq(payload) {
    return WsroomsClient.readSeq(payload);
  }
}

function makeClientClass(adapter) {
  if (adapter === 'wsrooms') return WsroomsClient; // the ws package
  if (adapter === 'wsrooms-raw') return RawWsroomsClient;
  if (adapter === 'socketio') return SioClient;
  throw new Error(`unknown adapter ${adapter}`);
}

module.exports = { WsroomsClient, RawWsroomsClient, SioClient, makeClientClass, encodeFrame, decodeFrame, nowUs };
