// Exercises fleet-socket.js against an in-process WebSocket stand-in and a fake clock.
// Run by test_fleet_socket_js.py: node fleet_socket_test.js <path of fleet-socket.js>
"use strict";
const assert = require("node:assert/strict");
const FleetSocket = require(process.argv[2]);
const TOKEN = "q8Zk3vJ0bW1yR2tLx9aP-_";

// -- the stand-ins -------------------------------------------------------------------------
let sockets = [];
class FakeWebSocket {
  constructor(url, protocols) {
    this.url = url; this.offered = protocols; this.sent = []; this.readyState = 0;
    this.protocol = ""; this.bufferedAmount = 0; this.closedWith = null;
    sockets.push(this);
  }
  send(data) { assert.equal(this.readyState, 1, "send on a socket that is not open"); this.sent.push(data); }
  close(code, reason) { this.closedWith = [code, reason]; this.readyState = 2; }
  // what the server does:
  accept(protocol) { this.readyState = 1; this.protocol = protocol; this.onopen({}); }
  hello(fields) {
    this.message("H\n" + JSON.stringify(Object.assign({v: 1, session: TOKEN, resumed: false, ack: 0, protocol: null}, fields)));
  }
  message(data) { this.onmessage({data}); }
  drop(code = 1006, wasClean = false, reason = "") { this.readyState = 3; if (this.onclose) this.onclose({code, reason, wasClean}); }
}
let now = 0, timers = [];
const clock = {
  setTimeout: (fn, ms) => { const t = {fn, at: now + ms}; timers.push(t); return t; },
  clearTimeout: (t) => { timers = timers.filter((x) => x !== t); },
  now: () => now,
};
function advance(ms) {
  const until = now + ms;
  for (;;) {
    timers.sort((a, b) => a.at - b.at);
    const t = timers[0];
    if (!t || t.at > until) break;
    timers.shift(); now = t.at; t.fn();
  }
  now = until;
}
function open(protocols, options) {
  sockets = []; timers = []; now = 0;
  const events = [];
  const ws = new FleetSocket("ws://x/ws/", protocols, Object.assign({WebSocket: FakeWebSocket, random: () => 1}, clock, options));
  for (const type of ["open", "message", "close", "error"]) ws.addEventListener(type, (e) => events.push([type, e]));
  return {ws, events, of: (type) => events.filter(([t]) => t === type).map(([, e]) => e)};
}
const tests = [];
const test = (name, fn) => tests.push([name, fn]);

// -- the tests -----------------------------------------------------------------------------
test("codec: text and binary frames, control messages, errors naming the cause", () => {
  const {parse, encodeData, ProtocolError} = FleetSocket.envelope;
  assert.deepEqual(parse("D 3 1\nhi\nthere"), {kind: "D", seq: 3, ack: 1, payload: "hi\nthere"});
  const bin = parse(encodeData(2, 0, new Uint8Array([0, 10, 255]).buffer));
  assert.deepEqual([bin.seq, [...new Uint8Array(bin.payload)]], [2, [0, 10, 255]]);
  assert.deepEqual(parse("A 7\n"), {kind: "A", ack: 7});
  assert.equal(parse("B\n").kind, "B");
  assert.equal(parse(new TextEncoder().encode("X\n").buffer).kind, "X");
  for (const [bad, cause] of [["D 01 0\nx", "bad seq"], ["D 0 0\n", "seq 0"], ["Q\n", "unknown"],
                              ["A 1\nx", "malformed 'A'"], ["nope", "no header"],
                              ["D 9007199254740992 0\n", "bad seq"], ['H\n{"v":2}', "version"]]) {
    assert.throws(() => parse(bad), (e) => e instanceof ProtocolError && e.message.includes(cause), bad);
  }
});

test("new session: offer, hello, open once, protocol is the app's, frames enveloped", () => {
  const {ws, of} = open(["chat.v2"]);
  const s = sockets[0];
  assert.deepEqual(s.offered, ["channels-fleet.resume.v1", "chat.v2"]);
  assert.throws(() => ws.send("early"), /CONNECTING/);
  s.accept("channels-fleet.resume.v1");
  assert.equal(ws.readyState, FleetSocket.CONNECTING);  // until the hello
  s.hello({protocol: "chat.v2"});
  assert.equal(ws.readyState, FleetSocket.OPEN);
  assert.equal(ws.protocol, "chat.v2");
  assert.equal(of("open").length, 1);
  assert.equal(of("open")[0].resumed, false);
  ws.send("hi");
  ws.send(new Uint8Array([1, 2]));
  assert.equal(s.sent[0], "D 1 0\nhi");
  assert.deepEqual([...new Uint8Array(s.sent[1])], [...Buffer.from("D 2 0\n"), 1, 2]);
  ws.binaryType = "arraybuffer";
  s.message("D 1 2\necho");
  assert.equal(of("message")[0].data, "echo");
});

test("acks: an A after ACK_EVERY frames, or after ACK_AFTER_MS", () => {
  const {ws} = open();
  const s = sockets[0];
  s.accept("channels-fleet.resume.v1"); s.hello({});
  for (let i = 1; i <= 16; i++) s.message(`D ${i} 0\nm${i}`);
  assert.deepEqual(s.sent, ["A 16\n"]);
  s.message("D 17 0\nlate");
  advance(999);
  assert.equal(s.sent.length, 1);
  advance(1);
  assert.deepEqual(s.sent, ["A 16\n", "A 17\n"]);
  ws.send("x");
  assert.equal(s.sent[2], "D 1 17\nx");
});

test("dropped connection: backoff, resume offer with the last seq, replay, no events", () => {
  const {ws, of} = open(["chat.v2"]);
  let s = sockets[0];
  s.accept("channels-fleet.resume.v1"); s.hello({protocol: "chat.v2"});
  ws.send("a"); ws.send("b"); ws.send("c");
  s.message("D 1 1\nfrom server");
  s.drop();
  ws.send("d");  // while away: kept
  assert.equal(ws.readyState, FleetSocket.OPEN);
  assert.equal(sockets.length, 1);
  advance(250);  // first retry within backoffBase (random() = 1: the ceiling)
  s = sockets[1];
  assert.deepEqual(s.offered, ["channels-fleet.resume.v1", `channels-fleet.session.${TOKEN}.1`, "chat.v2"]);
  s.accept("channels-fleet.resume.v1");
  s.hello({resumed: true, ack: 2, protocol: "chat.v2"});
  assert.deepEqual(s.sent, ["D 3 1\nc", "D 4 1\nd"]);
  s.message("D 1 4\nfrom server");  // a replay of what arrived: dropped
  s.message("D 2 4\nnew");
  assert.deepEqual(of("message").map((e) => e.data), ["from server", "new"]);
  assert.equal(of("open").length, 1);
  assert.equal(of("close").length, 0);
  assert.equal(ws.resumes, 1);
});

test("backoff: full jitter doubling to the cap; reset after a hello", () => {
  const delays = [];
  const {ws} = open([], {random: () => 1});
  sockets[0].accept("channels-fleet.resume.v1"); sockets[0].hello({});
  sockets[0].drop();
  for (let i = 0; i < 8; i++) {
    const t = timers.find(() => true);
    delays.push(t.at - now);
    advance(t.at - now);
    sockets[sockets.length - 1].drop();  // the attempt fails
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  assert.equal(ws.readyState, FleetSocket.OPEN);
});

test("B: reconnect at once, no close sent on the old socket", () => {
  const {ws} = open([], {random: () => 1});
  const old = sockets[0];
  old.accept("channels-fleet.resume.v1"); old.hello({});
  old.message("B\n");
  assert.equal(old.closedWith, null);
  advance(0);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].offered[1], `channels-fleet.session.${TOKEN}.0`);
  old.drop(4001, true);  // the server closes it once superseded: ignored
  assert.equal(ws.readyState, FleetSocket.OPEN);
});

test("lost session: a new one opens with resumed=false and the count of dropped frames", () => {
  const {ws, of} = open();
  sockets[0].accept("channels-fleet.resume.v1"); sockets[0].hello({});
  ws.send("a"); ws.send("b");
  sockets[0].drop();
  advance(250);
  sockets[1].accept("channels-fleet.resume.v1");
  sockets[1].hello({session: "z".repeat(22)});
  assert.equal(of("open").length, 2);
  assert.deepEqual([of("open")[1].resumed, of("open")[1].lost], [false, 2]);
  assert.equal(ws.session, "z".repeat(22));
  assert.deepEqual(sockets[1].sent, []);
  ws.send("c");
  assert.equal(sockets[1].sent[0], "D 1 0\nc");
});

test("bound: a resume the client cannot replay is closed 4010, then a new session", () => {
  const {ws, of} = open([], {maxUnacked: 2});
  sockets[0].accept("channels-fleet.resume.v1"); sockets[0].hello({});
  sockets[0].drop();
  ws.send("1"); ws.send("2"); ws.send("3");  // 1 leaves the bound
  advance(250);
  sockets[1].accept("channels-fleet.resume.v1");
  sockets[1].hello({resumed: true, ack: 0});
  assert.equal(sockets[1].closedWith[0], 4010);
  advance(0);
  assert.equal(sockets[2].offered.length, 1);  // no session offered
  sockets[2].accept("channels-fleet.resume.v1"); sockets[2].hello({session: "n".repeat(22)});
  assert.deepEqual([of("open").length, of("open")[1].lost], [2, 3]);
});

test("X then the app's close: final, with its code and reason", () => {
  const {ws, of} = open();
  const s = sockets[0];
  s.accept("channels-fleet.resume.v1"); s.hello({});
  s.message("X\n");
  s.drop(4003, true, "bye");
  assert.equal(ws.readyState, FleetSocket.CLOSED);
  assert.deepEqual([of("close")[0].code, of("close")[0].reason], [4003, "bye"]);
  advance(60000);
  assert.equal(sockets.length, 1);
});

test("close(): sends the close, the session ends when it comes back", () => {
  let closed = null;
  const {ws} = open();
  ws.onclose = (e) => { closed = e.code; };
  const s = sockets[0];
  s.accept("channels-fleet.resume.v1"); s.hello({});
  ws.close();
  assert.deepEqual(s.closedWith, [1000, ""]);
  assert.equal(ws.readyState, FleetSocket.CLOSING);
  s.drop(1000, true);
  assert.equal(closed, 1000);
  assert.throws(() => ws.close(1001), /close code 1001/);
});

test("protocol error: close 4002 to the server, error and close 1002 to the app", () => {
  const {ws, of} = open();
  const s = sockets[0];
  s.accept("channels-fleet.resume.v1"); s.hello({});
  s.message("D 3 0\nskips");
  assert.equal(s.closedWith[0], 4002);
  assert.equal(of("error").length, 1);
  assert.equal(of("close")[0].code, 1002);
  assert.match(of("close")[0].reason, /frame 3 after frame 0/);
  assert.equal(ws.readyState, FleetSocket.CLOSED);
});

test("plain server: no envelope; a drop reconnects as a new session", () => {
  const {ws, of} = open(["chat.v2"]);
  sockets[0].accept("chat.v2");
  assert.equal(ws.readyState, FleetSocket.OPEN);
  assert.equal(ws.resumable, false);
  ws.send("raw");
  assert.deepEqual(sockets[0].sent, ["raw"]);
  sockets[0].message("plain");
  assert.equal(of("message")[0].data, "plain");
  sockets[0].drop(1012, true);  // a restart, not the app: reconnect
  ws.send("lost");
  advance(250);
  sockets[1].accept("chat.v2");
  assert.deepEqual([of("open").length, of("open")[1].lost], [2, 1]);
  sockets[1].drop(4003, true, "no");  // the app's close: final
  assert.equal(of("close")[0].code, 4003);
});

test("a server that selects no subprotocol (a browser fails that handshake): plain, then the offer again", () => {
  const {ws, of} = open([]);
  assert.deepEqual(sockets[0].offered, ["channels-fleet.resume.v1"]);
  sockets[0].drop();  // the browser failed the handshake: nothing selected
  advance(250);
  assert.deepEqual(sockets[1].offered, []);  // the app's own subprotocols only: none
  sockets[1].accept("");
  assert.equal(ws.readyState, FleetSocket.OPEN);
  assert.equal(ws.resumable, false);
  sockets[1].drop(1006);
  advance(250);
  assert.deepEqual(sockets[2].offered, ["channels-fleet.resume.v1"]);  // the next server may resume
  sockets[2].drop();
  advance(500);
  assert.deepEqual(sockets[3].offered, []);
  sockets[3].drop();  // a plain attempt that fails too: the offer again
  advance(1000);
  sockets[4].accept("channels-fleet.resume.v1"); sockets[4].hello({});
  assert.equal(ws.resumable, true);
  assert.deepEqual([of("open").length, of("close").length], [2, 0]);
  // A resume is never tried without its offer: a failed one is retried with it.
  sockets[4].drop();
  advance(250);
  assert.deepEqual(sockets[5].offered, ["channels-fleet.resume.v1", `channels-fleet.session.${TOKEN}.0`]);
  sockets[5].drop();
  advance(500);
  assert.deepEqual(sockets[6].offered, ["channels-fleet.resume.v1", `channels-fleet.session.${TOKEN}.0`]);
});

test("maxRetries: error then close 1006", () => {
  const {ws, of} = open([], {maxRetries: 2});
  sockets[0].accept("channels-fleet.resume.v1"); sockets[0].hello({});
  sockets[0].drop();
  for (let i = 0; i < 3; i++) { advance(10000); sockets[sockets.length - 1].drop(); }
  assert.equal(of("error").length, 1);
  assert.equal(of("close")[0].code, 1006);
  assert.equal(ws.readyState, FleetSocket.CLOSED);
});

test("reserved app subprotocols are refused", () => {
  assert.throws(() => new FleetSocket("ws://x/", ["channels-fleet.mine"], {WebSocket: FakeWebSocket}), /reserved/);
});

let failed = 0;
for (const [name, fn] of tests) {
  try { fn(); console.log("ok  " + name); } catch (e) { failed++; console.log("FAIL " + name + "\n" + e.stack); }
}
process.exit(failed ? 1 : 0);
