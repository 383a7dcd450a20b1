// Kraiter dashboard: makes the live feed live. Every page works without this script.
//
// The feed page lists the latest events (rendered on the server) and then listens to
// GET /api/events/stream with a short-lived token that it asks its own server for. When the stream
// fails (network, server restart, an expired token) it asks for a fresh token and reopens the
// stream after the last event it saw, so a feed left open for hours neither misses nor repeats.
(() => {
  "use strict";

  const feed = document.getElementById("feed");
  if (!feed || feed.hasAttribute("data-disabled")) return;

  const list = document.getElementById("feed-list");
  const empty = document.getElementById("feed-empty");
  const template = document.getElementById("event-template");
  const status = document.getElementById("feed-status");
  const pause = document.getElementById("feed-pause");
  const MAX_ITEMS = 500;
  const FIRST_RETRY_MS = 1000;
  const LAST_RETRY_MS = 30000;

  const seen = new Set(Array.from(list.children, (item) => item.dataset.id));
  const held = [];
  let lastEventId = feed.dataset.resumeFrom || "";
  let source = null;
  let retryMs = FIRST_RETRY_MS;
  let paused = false;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function shortTime(iso) {
    return (iso || "").slice(0, 19).replace("T", " ");
  }

  function field(node, name) {
    return node.querySelector(`[data-field="${name}"]`);
  }

  // Fill a copy of the page's <template> row; text only (never HTML) from the event.
  function render(item) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.id = item.id;
    node.classList.add("fresh");
    field(node, "event").textContent = item.event;
    const email = field(node, "email");
    email.textContent = item.email;
    email.href = feed.dataset.contactUrl + encodeURIComponent(item.contactId);
    const time = field(node, "timestamp");
    time.dateTime = item.timestamp;
    time.textContent = shortTime(item.timestamp);
    field(node, "source").textContent = item.source || "";
    const properties = field(node, "properties");
    for (const [key, value] of Object.entries(item.properties || {})) {
      const entry = document.createElement("li");
      const name = document.createElement("span");
      name.className = "key";
      name.textContent = key;
      const shown = document.createElement("span");
      shown.className = "value";
      shown.textContent = typeof value === "string" ? value : JSON.stringify(value);
      entry.append(name, " ", shown);
      properties.append(entry);
    }
    return node;
  }

  // `items` in the order they were stored; the newest goes on top.
  function show(items) {
    const fragment = document.createDocumentFragment();
    for (let i = items.length - 1; i >= 0; i -= 1) fragment.append(render(items[i]));
    list.prepend(fragment);
    empty.hidden = true;
    while (list.children.length > MAX_ITEMS) {
      seen.delete(list.lastElementChild.dataset.id);
      list.lastElementChild.remove();
    }
  }

  function onMessage(message) {
    if (message.lastEventId) lastEventId = message.lastEventId;
    let item;
    try {
      item = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!item || !item.id || seen.has(item.id)) return;
    seen.add(item.id);
    if (paused) {
      held.push(item);
      if (held.length > MAX_ITEMS) seen.delete(held.shift().id);
      pause.textContent = `Resume (${held.length} new)`;
      return;
    }
    show([item]);
  }

  function signedOut() {
    setStatus("ended", "Signed out: ");
    const link = document.createElement("a");
    link.href = `${feed.dataset.signInUrl}?next=${encodeURIComponent(location.pathname + location.search)}`;
    link.textContent = "sign in again to see new events";
    status.append(link);
  }

  function retryLater() {
    setStatus("waiting", "Reconnecting…");
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, LAST_RETRY_MS);
  }

  async function streamToken() {
    const response = await fetch(feed.dataset.tokenUrl, {
      method: "POST", credentials: "same-origin", headers: { Accept: "application/json" },
    });
    if (response.status === 401) return null;
    if (!response.ok) throw new Error(`stream token: HTTP ${response.status}`);
    return (await response.json()).token;
  }

  async function connect() {
    let token;
    try {
      token = await streamToken();
    } catch {
      retryLater();
      return;
    }
    if (token === null) {
      signedOut();
      return;
    }
    const params = new URLSearchParams({ token });
    if (feed.dataset.event) params.set("event", feed.dataset.event);
    if (feed.dataset.email) params.set("email", feed.dataset.email);
    if (lastEventId) params.set("lastEventId", lastEventId);
    source = new EventSource(`${feed.dataset.streamUrl}?${params}`);
    source.onopen = () => {
      retryMs = FIRST_RETRY_MS;
      setStatus("live", "Live: new events appear here");
    };
    source.onmessage = onMessage;
    source.onerror = () => {
      // Reopen ourselves (with a fresh token) rather than let EventSource retry a stale URL.
      source.close();
      source = null;
      retryLater();
    };
  }

  pause.hidden = false;
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused && held.length) show(held.splice(0));
  });

  setStatus("waiting", "Connecting…");
  connect();
})();
