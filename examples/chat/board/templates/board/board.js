// The live board: one WebSocket to a Demultiplexer carrying two streams, "board" (the Card model,
// bound with channels_fleet.binding.Binding) and "chat" (the chat room "board").
// Frames are {"stream": name, "payload": ...} both ways. The socket is a FleetSocket
// (channels_fleet/fleet-socket.js): it reconnects by itself and resumes where the interfaces
// offer resumable sessions, so the consumer keeps its subscription across a dropped connection.
(function () {
  "use strict";
  const root = document.getElementById("board");
  const stateEl = document.getElementById("board-state");
  const chatLog = document.getElementById("chat-log");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}${root.dataset.socketPath}`;
  const COLUMNS = [["todo", "To do"], ["doing", "Doing"], ["done", "Done"]];
  const cards = new Map(); // pk -> data
  const deleted = new Set(); // pks a push deleted before the list arrived
  let ws = null;
  let retry = 0;

  function setState(text, bad) {
    stateEl.textContent = text;
    stateEl.className = bad ? "badge board-state bad" : "badge ok board-state";
  }

  function send(stream, payload) {
    if (ws && ws.readyState === FleetSocket.OPEN) {
      ws.send(JSON.stringify({ stream: stream, payload: payload }));
      return true;
    }
    setState("not connected: not sent", true);
    return false;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function button(text, title, onclick) {
    const b = el("button", { type: "button", title: title, "aria-label": title }, text);
    b.addEventListener("click", onclick);
    return b;
  }

  function render() {
    root.replaceChildren();
    COLUMNS.forEach(([key, label], index) => {
      const col = el("section", { class: "board-column", "data-column": key });
      const inColumn = [...cards.values()].filter((c) => c.column === key).length;
      const heading = el("h2", {}, label);
      heading.append(el("span", {}, String(inColumn)));
      col.append(heading);
      const list = el("ul", {});
      [...cards.entries()]
        .filter(([, c]) => c.column === key)
        .sort(([a], [b]) => a - b)
        .forEach(([pk, c]) => {
          const item = el("li", { class: "card", "data-pk": String(pk) });
          item.append(el("span", { class: "card-title" }, c.title));
          item.append(el("span", { class: "card-author" }, c.author));
          const tools = el("span", { class: "card-tools" });
          if (index > 0) {
            const left = COLUMNS[index - 1];
            tools.append(button("\u2190", `move to ${left[1]}`, () => move(pk, left[0])));
          }
          if (index < COLUMNS.length - 1) {
            const right = COLUMNS[index + 1];
            tools.append(button("\u2192", `move to ${right[1]}`, () => move(pk, right[0])));
          }
          tools.append(button("\u2715", "delete", () => send("board", { action: "delete", pk: pk })));
          item.append(tools);
          list.append(item);
        });
      col.append(list);
      if (key === "todo") col.append(addForm());
      root.append(col);
    });
  }

  function move(pk, column) {
    send("board", { action: "update", pk: pk, data: { column: column } });
  }

  function addForm() {
    const form = el("form", { class: "card-add" });
    const input = el("input", { name: "title", placeholder: "New card", maxlength: "200",
                                required: "", "aria-label": "New card title" });
    form.append(input, el("button", { type: "submit" }, "Add"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (send("board", { action: "create", data: { title: input.value } })) input.value = "";
    });
    return form;
  }

  function onBoard(p) {
    if (p.error) {
      const why = p.error === "permission denied" ? "sign in to change the board" : p.error;
      setState(`${p.action || "board"}: ${why}`, true);
      return;
    }
    if (p.action === "list" && p.items) {
      // Pushes may have arrived since subscribing: the list is the base, pushes win.
      const pushed = new Map(cards);
      cards.clear();
      p.items.forEach((i) => { if (!deleted.has(i.pk)) cards.set(i.pk, i.data); });
      pushed.forEach((data, pk) => cards.set(pk, data));
    } else if (p.model && p.action === "delete") {
      cards.delete(p.pk);
      deleted.add(p.pk);
    } else if (p.model) {
      cards.set(p.pk, p.data);
    } else {
      return; // an acknowledgement: the push that follows changes the board
    }
    setState("live", false);
    render();
  }

  function onChat(p) {
    const li = el("li", {});
    li.append(el("span", { class: "author" }, p.user), document.createTextNode(p.message));
    chatLog.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  function connect() {
    ws = new FleetSocket(url);
    // Once per session: the first, or a new one after a session was lost (its consumer is new
    // and subscribed to nothing): subscribe and list again.
    ws.addEventListener("open", () => {
      retry = 0;
      setState("live", false);
      // Subscribe first, then list: no change can fall between the two.
      send("board", { action: "subscribe" });
      send("board", { action: "list" });
    });
    ws.addEventListener("message", (e) => {
      const frame = JSON.parse(e.data);
      if (frame.error) setState(`socket: ${frame.error}`, true);
      else if (frame.event === "closed") setState(`${frame.stream} stream closed (${frame.code})`, true);
      else if (frame.stream === "board") onBoard(frame.payload);
      else if (frame.stream === "chat") onChat(frame.payload);
    });
    // The session ended for good (the server closed it, or it was taken over): a new socket.
    ws.addEventListener("close", (e) => {
      // 1013 (try later): come back more slowly, as the close code asks.
      setState(`disconnected (${e.code}), reconnecting...`, true);
      setTimeout(connect, e.code === 1013 ? 2000 : Math.min(500 * 2 ** retry++, 10000));
    });
  }

  document.getElementById("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("chat-message");
    if (input.value && send("chat", { message: input.value })) input.value = "";
  });

  render();
  connect();
})();
