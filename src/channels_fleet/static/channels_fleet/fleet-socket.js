/*
 * FleetSocket: a drop-in for WebSocket whose session survives its connection.
 *
 * It speaks channels-fleet.resume.v1 (docs/resume-protocol.md in channels-fleet): a dropped
 * connection is reconnected (full-jitter back-off, or at once when the interface sends B) and
 * resumed, each side replaying what the other had not acknowledged. Resumes are invisible:
 * `open` fires once per session (again only for a new session after a lost one, with
 * event.resumed === false and event.lost, the unacknowledged frames dropped: re-join there),
 * `close` only when the session ends for good (X then the app's close, close() here, a
 * protocol error, or maxRetries failed reconnects). A server that does not select the resume
 * subprotocol gets a plain WebSocket, reconnected after an unclean end as a new session. A
 * browser fails a handshake in which subprotocols were offered and the server selected none (a
 * server without resume whose app selects none), so a new session whose handshake failed is
 * tried next with the app's own subprotocols only, then with the offer again, in turn.
 *
 *   <script src="{% static 'channels_fleet/fleet-socket.js' %}"></script>   (window.FleetSocket)
 *   import { FleetSocket } from ".../channels_fleet/fleet-socket.mjs";       (ES module)
 *
 *   const ws = new FleetSocket("wss://example.com/ws/chat/", ["chat.v2"]);
 *   ws.onopen = () => ws.send(JSON.stringify({join: "lobby"}));   // again on a new session
 *   ws.onmessage = (event) => console.log(event.data);
 *
 * Options (third argument): maxUnacked (1000 frames), maxUnackedBytes (1 MiB), backoffBase
 * (250 ms), backoffCap (10000 ms), maxRetries (Infinity), helloTimeout (10000 ms), and for
 * tests the transport and clock: WebSocket, setTimeout, clearTimeout, random, now.
 * No dependencies. Blob payloads are sent as Blobs (the header as a Blob part).
 */
(function (root) {
  "use strict";

  var SUBPROTOCOL = "channels-fleet.resume.v1";
  var SESSION_PREFIX = "channels-fleet.session.";
  var RESERVED_PREFIX = "channels-fleet.";
  var ACK_EVERY = 16;
  var ACK_AFTER_MS = 1000;
  var MAX_HEADER = 64;
  var MAX_SEQ = 9007199254740991;
  var NUMBER = /^(0|[1-9][0-9]{0,15})$/;
  var TOKEN = /^[A-Za-z0-9_-]{16,128}$/;
  var CLOSE_PROTOCOL_ERROR = 1002;
  var CLOSE_SUPERSEDED = 4001;
  var CLOSE_CLIENT_PROTOCOL_ERROR = 4002;
  var CLOSE_RESUME_LOST = 4010;

  function ProtocolError(message) {
    this.name = "ProtocolError";
    this.message = message;
  }
  ProtocolError.prototype = Object.create(Error.prototype);

  function number(text, what) {
    if (!NUMBER.test(text) || Number(text) > MAX_SEQ) {
      throw new ProtocolError("bad " + what + " " + JSON.stringify(text.slice(0, 20)));
    }
    return Number(text);
  }

  function isBlob(data) {
    return typeof Blob !== "undefined" && data instanceof Blob;
  }

  function asciiBytes(text) {
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  // A message of a resumable session -> {kind, seq, ack, payload, hello}; ProtocolError if bad.
  function parse(data) {
    var header, rest, end, i;
    if (typeof data === "string") {
      end = data.slice(0, MAX_HEADER).indexOf("\n");
      if (end < 0) throw new ProtocolError("no header: no '\\n' in the first 64 characters");
      header = data.slice(0, end);
      if (!/^[\x00-\x7f]*$/.test(header)) throw new ProtocolError("header is not ASCII");
      rest = data.slice(end + 1);
    } else {
      var bytes = new Uint8Array(data);
      end = -1;
      for (i = 0; i < Math.min(bytes.length, MAX_HEADER); i++) {
        if (bytes[i] === 10) { end = i; break; }
      }
      if (end < 0) throw new ProtocolError("no header: no '\\n' in the first 64 bytes");
      header = "";
      for (i = 0; i < end; i++) {
        if (bytes[i] > 127) throw new ProtocolError("header is not ASCII");
        header += String.fromCharCode(bytes[i]);
      }
      rest = data.slice(end + 1);
    }
    var parts = header.split(" ");
    var kind = parts[0];
    var empty = typeof rest === "string" ? rest.length === 0 : rest.byteLength === 0;
    if (kind === "D" && parts.length === 3) {
      var seq = number(parts[1], "seq");
      if (seq === 0) throw new ProtocolError("frame seq 0: app frames count from 1");
      return {kind: "D", seq: seq, ack: number(parts[2], "ack"), payload: rest};
    }
    if (kind === "A" && parts.length === 2 && empty) return {kind: "A", ack: number(parts[1], "ack")};
    if (kind === "H" && parts.length === 1) return {kind: "H", hello: parseHello(rest)};
    if ((kind === "B" || kind === "X") && parts.length === 1 && empty) return {kind: kind};
    if ("DAHBX".indexOf(kind) >= 0 && kind.length === 1) {
      throw new ProtocolError("malformed '" + kind + "' message: header " + JSON.stringify(header));
    }
    throw new ProtocolError("unknown message kind " + JSON.stringify(kind.slice(0, 20)));
  }

  function parseHello(body) {
    var hello;
    if (typeof body !== "string") body = new TextDecoder().decode(body);
    try { hello = JSON.parse(body); } catch (e) { throw new ProtocolError("hello is not JSON"); }
    if (hello === null || typeof hello !== "object" || Array.isArray(hello)) {
      throw new ProtocolError("hello is not a JSON object");
    }
    if (hello.v !== 1) throw new ProtocolError("hello version " + JSON.stringify(hello.v) + ", expected 1");
    if (typeof hello.session !== "string" || !TOKEN.test(hello.session)) {
      throw new ProtocolError("hello session is not a token (16-128 of [A-Za-z0-9_-])");
    }
    if (typeof hello.resumed !== "boolean") throw new ProtocolError("hello 'resumed' is not a boolean");
    if (!Number.isSafeInteger(hello.ack) || hello.ack < 0) {
      throw new ProtocolError("hello 'ack' is not an integer 0..2**53-1");
    }
    if (!hello.resumed && hello.ack !== 0) throw new ProtocolError("hello of a new session acknowledges frames");
    if (hello.protocol !== null && typeof hello.protocol !== "string") {
      throw new ProtocolError("hello 'protocol' is neither a string nor null");
    }
    return {session: hello.session, resumed: hello.resumed, ack: hello.ack, protocol: hello.protocol};
  }

  // D <seq> <ack>\n and the payload, in a message of the payload's own type.
  function encodeData(seq, ack, payload) {
    var header = "D " + seq + " " + ack + "\n";
    if (typeof payload === "string") return header + payload;
    if (isBlob(payload)) return new Blob([header, payload]);
    var body = new Uint8Array(payload);
    var out = new Uint8Array(header.length + body.length);
    out.set(asciiBytes(header), 0);
    out.set(body, header.length);
    return out.buffer;
  }

  function payloadSize(payload) {
    if (typeof payload === "string") return new TextEncoder().encode(payload).length;
    return isBlob(payload) ? payload.size : payload.byteLength;
  }

  function offer(app, session, last) {
    var offered = [SUBPROTOCOL];
    if (session) offered.push(SESSION_PREFIX + session + "." + last);
    return offered.concat(app);
  }

  function makeEvent(type, props) {
    var event;
    if (type === "message" && typeof MessageEvent === "function") {
      event = new MessageEvent("message", {data: props.data});
      delete props.data;
    } else if (type === "close" && typeof CloseEvent === "function") {
      event = new CloseEvent("close", props);
      props = {};
    } else {
      event = new Event(type);
    }
    for (var key in props) {
      Object.defineProperty(event, key, {value: props[key], enumerable: true});
    }
    return event;
  }

  function invalidState(message) {
    return typeof DOMException === "function" ? new DOMException(message, "InvalidStateError")
      : new Error(message);
  }

  class FleetSocket extends EventTarget {
    constructor(url, protocols, options) {
      super();
      var app = protocols === undefined ? [] : typeof protocols === "string" ? [protocols] : Array.from(protocols);
      app.forEach(function (p) {
        if (String(p).indexOf(RESERVED_PREFIX) === 0) {
          throw new SyntaxError("subprotocol " + p + ": " + RESERVED_PREFIX + "* names are reserved");
        }
      });
      var o = Object.assign({
        maxUnacked: 1000, maxUnackedBytes: 1024 * 1024, backoffBase: 250, backoffCap: 10000,
        maxRetries: Infinity, helloTimeout: 10000, WebSocket: root.WebSocket,
        setTimeout: root.setTimeout.bind(root), clearTimeout: root.clearTimeout.bind(root),
        random: Math.random, now: Date.now,
      }, options || {});
      this.url = String(url);
      this.protocol = "";
      this.extensions = "";
      this.readyState = FleetSocket.CONNECTING;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      this.resumable = false;
      this.session = null;
      this.sessions = 0;
      this.resumes = 0;
      this._o = o;
      this._app = app;
      this._binaryType = "blob";
      this._ws = null;
      this._live = false;  // frames go to this._ws (its hello is handled)
      this._handshaken = false;  // this._ws opened
      this._offeredNew = false;  // this._ws offered resume for a new session
      this._plainNext = false;  // the next new session offers the app's subprotocols only
      this._greeted = false;
      this._ending = false;  // X came
      this._closing = false;  // close() was called
      this._failures = 0;
      this._timers = {};
      this._out = [];  // [{seq, payload, size}] not acknowledged
      this._seq = this._acked = this._lost = this._size = this._sent = 0;
      this._received = this._ackedIn = 0;
      this._since = null;
      this._connect();
    }

    get binaryType() { return this._binaryType; }
    set binaryType(value) {
      if (value === "blob" || value === "arraybuffer") this._binaryType = value;
    }

    get bufferedAmount() {
      var unsent = 0, sent = this._sent;
      this._out.forEach(function (f) { if (f.seq > sent) unsent += f.size; });
      return unsent + (this._ws && this._live ? this._ws.bufferedAmount : 0);
    }

    send(data) {
      if (this.readyState === FleetSocket.CONNECTING) throw invalidState("FleetSocket is still CONNECTING");
      if (this.readyState !== FleetSocket.OPEN) return;
      if (ArrayBuffer.isView(data)) data = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
      else if (data instanceof ArrayBuffer) data = data.slice(0);
      else if (!isBlob(data)) data = String(data);
      if (!this.resumable) {
        if (this._live) this._ws.send(data);
        else this._plainLost = (this._plainLost || 0) + 1;
        return;
      }
      this._add(data);
      this._flush();
    }

    close(code, reason) {
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw typeof DOMException === "function" ? new DOMException("close code " + code, "InvalidAccessError")
          : new Error("close code " + code);
      }
      if (this.readyState >= FleetSocket.CLOSING) return;
      code = code === undefined ? 1000 : code;
      reason = reason === undefined ? "" : String(reason);
      this._closing = true;
      this.readyState = FleetSocket.CLOSING;
      var ws = this._ws;
      if (ws && ws.readyState === 1) {
        ws.close(code, reason);  // the session ends when its close comes back
      } else {
        if (ws) { this._forget(ws); try { ws.close(); } catch (e) { /* still connecting */ } }
        this._final(code, reason, false);
      }
    }

    // -- connections ---------------------------------------------------------------------

    _connect() {
      var self = this, ws;
      var session = this.session && this.resumable ? this.session : null;
      // Never for a resume: a plain connection would start a new session, losing this one.
      var plain = this._plainNext && session === null;
      var offered = plain ? this._app.slice() : offer(this._app, session, this._received);
      this._offeredNew = !plain && session === null;
      this._plainNext = false;
      this._handshaken = false;
      this._greeted = false;
      this._ending = false;
      try {
        ws = new this._o.WebSocket(this.url, offered);
      } catch (e) {
        if (this.sessions === 0 && this._failures === 0) throw e;  // a bad URL: as WebSocket
        this._retry(false);
        return;
      }
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      ws.onopen = function () { if (ws === self._ws) self._onOpen(ws); };
      ws.onmessage = function (event) { if (ws === self._ws) self._onRaw(ws, event.data); };
      ws.onclose = function (event) { if (ws === self._ws) self._onClose(ws, event); };
      ws.onerror = function () { /* its close follows */ };
    }

    _forget(ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (this._ws === ws) { this._ws = null; this._live = false; }
    }

    _onOpen(ws) {
      var selected = ws.protocol || "";
      this._handshaken = true;
      this.extensions = ws.extensions || "";
      if (selected === SUBPROTOCOL) {
        var self = this;
        this._timer("hello", this._o.helloTimeout, function () { self._forget(ws); ws.close(); self._retry(false); });
        return;
      }
      if (selected.indexOf(RESERVED_PREFIX) === 0) {
        this._protocolError(ws, new ProtocolError("the server selected " + selected));
        return;
      }
      var lost = this._startSession(null, selected) + (this._plainLost || 0);
      this._plainLost = 0;
      this._greeted = this._live = true;
      this._failures = 0;
      this._opened(lost);
    }

    _onRaw(ws, data) {
      if (!this.resumable && this._greeted) { this._deliver(data); return; }
      if (this._ending) return;
      var m;
      try {
        m = parse(data);
        if (!this._greeted) {
          if (m.kind !== "H") throw new ProtocolError("first message is a " + m.kind + ", not the hello");
          this._onHello(ws, m.hello);
        } else if (m.kind === "D") {
          this._ack(m.ack);
          if (m.seq > this._received) {
            if (m.seq !== this._received + 1) {
              throw new ProtocolError("frame " + m.seq + " after frame " + this._received + ": " +
                (m.seq - this._received - 1) + " missing");
            }
            this._received = m.seq;
            if (this._since === null) this._since = this._o.now();
            this._deliver(m.payload);
            if (ws !== this._ws) return;  // the app's handler closed it
          }
          if (this._received - this._ackedIn >= ACK_EVERY) this._sendAck();
          else this._armAck();
        } else if (m.kind === "A") {
          this._ack(m.ack);
        } else if (m.kind === "B") {
          this._forget(ws);  // the server closes it once we resume elsewhere
          this._retry(true);
        } else if (m.kind === "X") {
          this._ending = true;
        } else {
          throw new ProtocolError("a second hello");
        }
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        this._protocolError(ws, e);
      }
    }

    _onHello(ws, hello) {
      this._clear("hello");
      if (hello.resumed) {
        if (!this.session || hello.session !== this.session) {
          throw new ProtocolError("the server resumed a session this client did not offer");
        }
        if (hello.ack > this._seq) {
          throw new ProtocolError("hello acks frame " + hello.ack + "; the last sent is " + this._seq);
        }
        if (!(Math.max(this._acked, this._lost) <= hello.ack)) {  // frames it needs are gone
          this._forget(ws);
          ws.close(CLOSE_RESUME_LOST, "frames lost at the client's bound");
          this.session = null;
          this._failures = 0;  // the server answered: a new session, at once
          this._retry(true);
          return;
        }
        this._ack(hello.ack);
        this._sent = hello.ack;
        this.protocol = hello.protocol || "";
        this.resumes++;
        this._greeted = this._live = true;
        this._failures = 0;
        this._flush();
        return;
      }
      var lost = this._startSession(hello.session, hello.protocol || "");
      this._greeted = this._live = true;
      this._failures = 0;
      this._opened(lost);
    }

    _onClose(ws, event) {
      this._forget(ws);
      this._clear("ack");
      this._clear("hello");
      var code = event.code, reason = event.reason || "";
      if (this.readyState === FleetSocket.CLOSED) return;
      if (this._closing || this._ending) { this._final(code, reason, !!event.wasClean); return; }
      if (!this._greeted) {  // a handshake that failed, or a connection lost before its hello
        this._plainNext = this._offeredNew && !this._handshaken;
        this._retry(false);
        return;
      }
      if (!this.resumable) {
        if (event.wasClean && (code === 1000 || (code >= 3000 && code <= 4999))) this._final(code, reason, true);
        else this._retry(false);
        return;
      }
      if (event.wasClean && (code === CLOSE_PROTOCOL_ERROR || code === CLOSE_SUPERSEDED)) {
        this._final(code, reason, true);
        return;
      }
      this._retry(false);
    }

    _retry(atOnce) {
      var self = this;
      this._live = false;
      if (atOnce && this._failures === 0) {
        this._timer("connect", 0, function () { self._connect(); });
        return;
      }
      this._failures++;
      if (this._failures > this._o.maxRetries) {
        this._dispatch("error", {});
        this._final(1006, "gave up after " + this._o.maxRetries + " reconnects", false);
        return;
      }
      var ceiling = Math.min(this._o.backoffCap, this._o.backoffBase * Math.pow(2, Math.min(this._failures - 1, 64)));
      this._timer("connect", this._o.random() * ceiling, function () { self._connect(); });
    }

    _protocolError(ws, error) {
      this._forget(ws);
      ws.close(CLOSE_CLIENT_PROTOCOL_ERROR, String(error.message).slice(0, 100));
      this._dispatch("error", {message: error.message});
      this._final(CLOSE_PROTOCOL_ERROR, ("protocol error: " + error.message).slice(0, 120), false);
    }

    _startSession(token, protocol) {
      var lost = this._seq - this._acked;
      this._out = [];
      this._seq = this._acked = this._lost = this._size = this._sent = 0;
      this._received = this._ackedIn = 0;
      this._since = null;
      this.session = token;
      this.resumable = token !== null;
      this.protocol = protocol;
      this.sessions++;
      return lost;
    }

    _opened(lost) {
      this.readyState = FleetSocket.OPEN;
      this._dispatch("open", {resumed: false, lost: this.sessions === 1 ? 0 : lost});
    }

    _final(code, reason, wasClean) {
      if (this.readyState === FleetSocket.CLOSED) return;
      for (var name in this._timers) this._clear(name);
      if (this._ws) this._forget(this._ws);
      this.readyState = FleetSocket.CLOSED;
      this._dispatch("close", {code: code, reason: reason, wasClean: wasClean});
    }

    // -- sequence state (the Outbox and Inbox of resume/buffers.py) ----------------------

    _add(payload) {
      var size = payloadSize(payload);
      this._seq++;
      this._out.push({seq: this._seq, payload: payload, size: size});
      this._size += size;
      while (this._out.length && (this._out.length > this._o.maxUnacked || this._size > this._o.maxUnackedBytes)) {
        var dropped = this._out.shift();
        this._size -= dropped.size;
        this._lost = dropped.seq;
      }
    }

    _ack(ack) {
      if (ack > this._seq) throw new ProtocolError("ack " + ack + " of frames never sent (the last sent is " + this._seq + ")");
      if (ack <= this._acked) return;
      this._acked = ack;
      while (this._out.length && this._out[0].seq <= ack) this._size -= this._out.shift().size;
    }

    _ackNow() {
      this._ackedIn = this._received;
      this._since = null;
      this._clear("ack");
      return this._received;
    }

    _flush() {
      while (this._live && this._sent < this._seq) {
        var next = null;
        for (var i = 0; i < this._out.length; i++) {
          if (this._out[i].seq > this._sent) { next = this._out[i]; break; }
        }
        if (!next || next.seq !== this._sent + 1) {  // dropped at the bound before it was written
          var ws = this._ws;
          this._forget(ws);
          ws.close(CLOSE_RESUME_LOST, "frames dropped at the client's bound unsent");
          this.session = null;
          this._retry(true);
          return;
        }
        this._ws.send(encodeData(next.seq, this._ackNow(), next.payload));
        this._sent = next.seq;
      }
    }

    _sendAck() {
      if (this._live) this._ws.send("A " + this._ackNow() + "\n");
    }

    _armAck() {
      var self = this;
      if (this._since === null || this._timers.ack !== undefined) return;
      this._timer("ack", Math.max(0, this._since + ACK_AFTER_MS - this._o.now()), function () {
        if (self._received > self._ackedIn) self._sendAck();
      });
    }

    _deliver(payload) {
      if (typeof payload !== "string" && this._binaryType === "blob" && typeof Blob !== "undefined") {
        payload = new Blob([payload]);
      }
      this._dispatch("message", {data: payload});
    }

    _dispatch(type, props) {
      var event = makeEvent(type, props);
      var handler = this["on" + type];
      if (typeof handler === "function") handler.call(this, event);
      this.dispatchEvent(event);
    }

    _timer(name, ms, fn) {
      var self = this;
      this._clear(name);
      this._timers[name] = this._o.setTimeout(function () { delete self._timers[name]; fn(); }, ms);
    }

    _clear(name) {
      if (this._timers[name] !== undefined) {
        this._o.clearTimeout(this._timers[name]);
        delete this._timers[name];
      }
    }
  }

  FleetSocket.CONNECTING = 0;
  FleetSocket.OPEN = 1;
  FleetSocket.CLOSING = 2;
  FleetSocket.CLOSED = 3;
  FleetSocket.SUBPROTOCOL = SUBPROTOCOL;
  // The codec, for tests and for whoever writes another client.
  FleetSocket.envelope = {parse: parse, encodeData: encodeData, offer: offer, ProtocolError: ProtocolError,
    ACK_EVERY: ACK_EVERY, ACK_AFTER_MS: ACK_AFTER_MS};

  root.FleetSocket = FleetSocket;
  if (typeof module === "object" && module && module.exports) module.exports = FleetSocket;
})(typeof globalThis !== "undefined" ? globalThis : this);
