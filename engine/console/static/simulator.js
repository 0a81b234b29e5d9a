// The simulator: an event stream in, fetch() out. Everything shown comes from the server.
(function () {
  "use strict";
  const root = document.getElementById("sim");
  if (!root) return;
  const base = document.body.dataset.base;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const phone = root.dataset.phone;
  const flow = root.dataset.flow;
  const name = root.dataset.name;
  const $ = (id) => document.getElementById(id);
  const chat = $("chat"), events = $("events"), badge = $("state"), countdown = $("countdown");
  let session = null;  // the phone's latest session, as the server last described it
  let skew = 0;        // server clock minus ours, in ms
  let shownSession = null;

  function post(path, body) {
    return fetch(base + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body),
    }).then(async (r) => {
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(answer.error || r.status + " " + r.statusText);
      return answer;
    });
  }

  function notice(text) {
    const el = $("notice");
    el.textContent = text;
    el.hidden = !text;
  }

  // WhatsApp's *bold* and _italic_, built as DOM nodes (never innerHTML).
  function formatted(text) {
    const out = document.createDocumentFragment();
    const pattern = /\*([^*\n]+)\*|_([^_\n]+)_/g;
    let last = 0, m;
    while ((m = pattern.exec(text)) !== null) {
      out.append(text.slice(last, m.index));
      const el = document.createElement(m[1] !== undefined ? "strong" : "em");
      el.textContent = m[1] !== undefined ? m[1] : m[2];
      out.append(el);
      last = pattern.lastIndex;
    }
    out.append(text.slice(last));
    return out;
  }

  function clock(iso, seconds) {
    const shown = {hour: "2-digit", minute: "2-digit", hour12: false};
    if (seconds) shown.second = "2-digit";
    return new Date(iso).toLocaleTimeString([], shown);
  }

  // The flow's diagram, redrawn with the session's state in green when it moves.
  const diagramSource = $("diagram-source").textContent;
  let drawn = null, drawings = 0;
  if (window.mermaid) window.mermaid.initialize({startOnLoad: false, securityLevel: "strict", theme: "neutral"});
  function draw(s) {
    const state = s && s.flow === flow ? s.state : "";
    if (!window.mermaid || !diagramSource.trim() || state === drawn) return;
    drawn = state;
    const source = diagramSource + (state ? "  classDef current fill:#25d366,stroke:#075e54,color:#fff\n  class " + state + " current\n" : "");
    window.mermaid.render("diagram-svg-" + (++drawings), source).then((out) => {
      if (drawn === state) $("diagram").innerHTML = out.svg;  // mermaid's own sanitised SVG
    }).catch((err) => notice("Diagram: " + err.message));
  }

  function separator(text) {
    const el = document.createElement("div");
    el.className = "separator";
    el.textContent = text;
    chat.append(el);
  }

  function bubble(m) {
    if (m.session !== shownSession) {
      separator("session #" + m.session);
      shownSession = m.session;
    }
    const el = document.createElement("div");
    el.className = "bubble " + (m.dir === "in" ? "me" : "bot");
    el.dataset.id = m.id;
    const body = document.createElement("div");
    body.className = "text";
    body.append(formatted(m.body));
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = clock(m.at) + (m.dir === "in" ? " ✓✓" : "");
    el.append(body, meta);
    chat.append(el);
    chat.scrollTop = chat.scrollHeight;
  }

  function eventItem(e) {
    const li = document.createElement("li");
    const at = document.createElement("span");
    at.className = "at";
    at.textContent = clock(e.at, true) + " #" + e.session;
    const trigger = document.createElement("span");
    trigger.className = "trigger";
    trigger.textContent = "[" + e.trigger + "]";
    li.append(at, (e.from || "·") + " → " + e.to + " ", trigger);
    if (e.detail) li.append(" " + e.detail);
    events.append(li);
  }

  function describe(s) {
    session = s;
    if (!s) {
      badge.textContent = "no session";
      badge.className = "badge closed";
    } else {
      badge.textContent = s.open ? s.state : s.state + " · " + s.reason;
      badge.className = "badge" + (s.open ? "" : s.reason === "timeout" ? " timeout" : " closed");
    }
    badge.dataset.state = s ? s.state : "";
    const hint = $("flow-hint");
    hint.hidden = !(s && s.open && s.flow !== flow);
    if (!hint.hidden) hint.textContent = "The open session runs flow " + s.flow + ". Reset to start " + flow + ".";
    draw(s);
    tick();
  }

  // Time left, from the server's expires_at and clock: it reaches 0:00 by itself.
  function tick() {
    let left = null;
    if (session && session.open) left = Math.max(0, session.expires - (Date.now() + skew));
    else if (session && session.reason === "timeout") left = 0;
    if (left === null) {
      countdown.textContent = "–";
      countdown.dataset.left = "";
      countdown.classList.remove("low");
      return;
    }
    const s = Math.ceil(left / 1000);
    countdown.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    countdown.dataset.left = String(s);
    countdown.classList.toggle("low", s <= 10);
  }
  setInterval(tick, 200);

  draw(null);
  const stream = new EventSource(base + "/api/sim/stream?phone=" + encodeURIComponent(phone));
  stream.addEventListener("feed", (e) => {
    const feed = JSON.parse(e.data);
    skew = feed.now - Date.now();
    feed.messages.forEach(bubble);
    feed.events.forEach(eventItem);
    describe(feed.session);
  });
  stream.onopen = () => { $("conn").textContent = "live"; };
  stream.onerror = () => {
    // A refused stream (logged out, server gone for good) is not retried by the browser.
    $("conn").textContent = stream.readyState === EventSource.CLOSED
      ? "disconnected: reload the page" : "reconnecting…";
  };

  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    notice("");
    post("/api/sim/messages", {phone: phone, text: text, flow: flow, name: name})
      .catch((err) => { notice("Not sent: " + err.message); input.value = text; });
  });

  $("reset").addEventListener("click", () => {
    post("/api/sim/reset", {phone: phone}).then((answer) => {
      chat.replaceChildren();
      events.replaceChildren();
      shownSession = null;
      notice("");
      describe(answer.session);
    }).catch((err) => notice("Reset failed: " + err.message));
  });

  ["text", "send", "reset"].forEach((id) => { $(id).disabled = false; });
  $("text").focus();
})();
