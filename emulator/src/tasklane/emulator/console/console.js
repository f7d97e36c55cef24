// The Tasklane console: plain JavaScript, no build step. Polls /console/api/* about once a second.
"use strict";
const TOKEN = document.querySelector('meta[name="tasklane-console-token"]').content;
const view = document.getElementById("view");
const REFRESH_MS = 1000;
let route = null, timer = null, content = null, generation = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const short = (name) => (name || "").split("/").pop();
const when = (seconds) => seconds ? new Date(seconds * 1000).toLocaleString(undefined, {hour12: false}) : "—";
const pill = (text, kind) => el("span", {class: `pill ${kind || text}`}, text);
const taskHref = (name) => `#/task/${encodeURIComponent(name)}`;
const queueHref = (name) => `#/queue/${encodeURIComponent(name)}`;

async function api(path) {
  const response = await fetch(path, {headers: {Accept: "application/json"}});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function flash(message, ok) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = ok ? "ok" : "error";
  box.hidden = false;
  box.dataset.kind = ok ? "ok" : "error";
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, ok ? 4000 : 10000);
}

async function act(action, name, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    const response = await fetch("/console/api/actions", {
      method: "POST", headers: {"Content-Type": "application/json", "X-Tasklane-Console": TOKEN},
      body: JSON.stringify({action, name})});
    const body = await response.json();
    if (!response.ok) flash(`Refused: ${body.error}`, false);
    else flash(body.message, true);
  } catch (error) {
    flash(`Failed: ${error.message}`, false);
  }
  refresh();
}

function body(decoded) {
  if (!decoded) return el("p", {class: "muted"}, "No body.");
  return el("div", {},
    el("p", {class: "muted"}, `${decoded.bytes} bytes, shown as ${decoded.as.toUpperCase()}`,
       decoded.truncated ? " (first 64 KiB)" : ""),
    el("pre", {class: `body body-${decoded.as}`}, decoded.text || "(empty)"));
}

function kv(pairs) {
  return el("dl", {class: "kv"}, pairs.filter(Boolean).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

// -- Views --------------------------------------------------------------------------------------

const views = {
  async queues() {
    const data = await api("/console/api/overview");
    document.getElementById("dead-count").textContent = data.deadLetters || "";
    const rows = data.queues.map((q) => {
      const share = q.limitPerMinute ? Math.min(100, 100 * q.dispatchesLastMinute / q.limitPerMinute) : 0;
      const retry = q.retry || {};
      return el("tr", {"data-queue": q.name},
        el("td", {}, el("a", {href: queueHref(q.name)}, q.id), el("div", {class: "muted"}, q.name)),
        el("td", {}, pill(q.state)),
        el("td", {class: "num depth"}, q.depth.toLocaleString()),
        el("td", {class: "num in-flight"}, `${q.inFlight} / ${q.rate.maxConcurrentDispatches}`),
        el("td", {class: "last-minute"}, el("span", {class: "meter"}, el("i", {style: `width:${share}%`})),
           `${q.dispatchesLastMinute} / ${q.limitPerMinute.toLocaleString()}`),
        el("td", {}, `${q.rate.maxDispatchesPerSecond}/s, burst ${q.rate.maxBurstSize}`, el("br"),
           el("span", {class: "muted"}, `${retry.maxAttempts ?? "∞"} attempts, backoff ${retry.minBackoff || "?"}–` +
              `${retry.maxBackoff || "?"}, ${retry.maxDoublings ?? 0} doublings` +
              (retry.maxRetryDuration && retry.maxRetryDuration !== "0s" ? `, for ${retry.maxRetryDuration}` : ""))),
        el("td", {}, el("div", {class: "actions"},
          q.state === "paused" ? el("button", {class: "primary", onclick: () => act("resume", q.name)}, "Resume")
                               : el("button", {onclick: () => act("pause", q.name)}, "Pause"),
          el("button", {class: "danger", onclick: () => act("purge", q.name,
            `Purge every task of ${q.id}?`)}, "Purge"))));
    });
    return [
      el("h1", {}, "Queues"),
      el("table", {id: "queues"},
        el("thead", {}, el("tr", {}, ["Queue", "State", "Depth", "In flight", "Dispatches, last minute / limit",
                                      "Settings", "Actions"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", {colspan: 7, class: "muted"}, "No queues.")))),
      data.deadLettersUnavailable
        ? el("p", {class: "error"}, `Dead letters: ${data.deadLettersUnavailable}.`)
        : el("p", {class: "muted"}, `Dead letters: ${data.deadLetters} (from ${data.deadLetterSource}). `,
             el("a", {href: "#/dead-letters"}, "Show them")),
    ];
  },

  async queue(name, state) {
    const params = new URLSearchParams({queue: name, q: state.search || "", after: state.after || "", limit: 50});
    const data = await api(`/console/api/tasks?${params}`);
    const rows = data.tasks.map((t) => el("tr", {"data-task": t.name},
      el("td", {}, el("a", {href: taskHref(t.name)}, t.id)),
      el("td", {}, when(t.scheduleTime)),
      el("td", {class: "num"}, t.attempts),
      el("td", {}, t.inFlight ? pill("in flight", "in_flight") : (t.lastStatus || el("span", {class: "muted"}, "—"))),
      el("td", {}, el("div", {class: "actions"},
        el("button", {onclick: () => act("run", t.name)}, "Run now"),
        el("button", {class: "danger", onclick: () => act("delete", t.name, `Delete ${t.id}?`)}, "Delete")))));
    const pager = el("div", {class: "toolbar"},
      el("span", {class: "muted"}, (data.matched !== null ? `${data.matched.toLocaleString()} matching, of ` : "") +
         `${data.total.toLocaleString()} tasks in the queue` +
         (state.after ? `, after ${short(state.after)}` : "")),
      state.after ? el("button", {onclick: () => { state.after = ""; state.pages = []; refresh(); }}, "First page") : null,
      state.pages && state.pages.length ? el("button", {onclick: () => { state.after = state.pages.pop(); refresh(); }},
                                             "Previous") : null,
      data.next ? el("button", {id: "next-page", onclick: () => {
        (state.pages = state.pages || []).push(state.after || ""); state.after = data.next; refresh(); }}, "Next page")
                : null);
    return [
      el("table", {id: "tasks"},
        el("thead", {}, el("tr", {}, ["Task", "Scheduled", "Attempts", "Last status", "Actions"]
                                       .map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", {colspan: 5, class: "muted"},
          state.search ? "No task matches." : "No tasks waiting: finished tasks are under their own pages (see dead letters, or open a task by name).")))),
      pager,
    ];
  },

  async task(name) {
    const data = await api(`/console/api/task?name=${encodeURIComponent(name)}`);
    const attempts = data.attempts.map((a) => el("div", {class: `card attempt ${a.outcome}`, "data-attempt": a.attempt},
      el("h2", {}, `Attempt ${a.attempt} `, pill(a.outcome.replace("_", " "), a.outcome), " ",
         a.status !== null ? `HTTP ${a.status}` : ""),
      el("div", {class: "grid2"},
        el("div", {},
          kv([["Started", when(a.started)], ["Latency", a.latencyMs !== null ? `${a.latencyMs} ms` : "running"],
              ["Request", `${a.method} ${a.url}`], ["Response", a.status !== null ? `${a.status}` : "—"],
              a.error ? ["Error", a.error] : null]),
          el("h2", {}, "Request headers"),
          kv(Object.entries(a.headers)),
          a.tokenClaims ? [el("h2", {}, "OIDC token (decoded claims)"),
                           el("pre", {class: "claims"}, JSON.stringify(a.tokenClaims, null, 2))] : null),
        el("div", {}, el("h2", {}, "Response body"),
          a.responseBody ? el("pre", {}, a.responseBody) : el("p", {class: "muted"}, "None.")))));
    return [
      el("p", {}, el("a", {href: queueHref(data.queue)}, `← ${short(data.queue)}`)),
      el("h1", {}, data.id),
      el("div", {class: "card"},
        kv([["Status", el("b", {id: "task-status"}, data.status)], ["Name", data.name],
            data.task ? ["Scheduled", when(data.task.scheduleTime)] : null,
            data.task ? ["Created", when(data.task.createTime)] : null,
            ["Attempts", data.task ? data.task.attempts : data.attempts.length]]),
        data.exists ? el("div", {class: "actions", style: "margin-top:10px"},
          el("button", {class: "primary", onclick: () => act("run", data.name)}, "Run now"),
          el("button", {class: "danger", onclick: () => act("delete", data.name, `Delete ${data.id}?`)}, "Delete"))
          : null),
      el("h2", {}, "Body"), body(data.body),
      el("h2", {}, `Attempts (${data.attempts.length})`),
      attempts.length ? attempts : el("p", {class: "muted"}, "No attempt yet."),
    ];
  },

  async deadLetters() {
    const data = await api("/console/api/dead-letters?limit=100");
    const cards = data.letters.map((l) => el("div", {class: "card letter", "data-letter": l.id},
      el("h2", {}, pill(l.kind), " ", l.reason),
      kv([["Task", l.taskName ? short(l.taskName) : "—"], ["Queue", l.queueName || "—"],
          ["Attempt", l.attempt], ["Request", `${l.method} ${l.path}`], ["First seen", l.firstSeen || "—"],
          ["Letter", l.id]]),
      el("h2", {}, "Body"), body(l.body),
      l.replays.length ? el("div", {class: "replays"}, el("h2", {}, "Replays"),
        el("ul", {}, l.replays.map((r) => el("li", {}, `${r.at}: `, el("a", {href: taskHref(r.taskName)},
                                                                         short(r.taskName)))))) : null,
      el("div", {class: "actions", style: "margin-top:10px"},
        el("button", {class: "primary replay", onclick: () => act("replay", l.id)}, "Replay"))));
    return [
      el("h1", {}, `Dead letters (${data.total})`),
      el("p", {class: "muted"}, `From ${data.source}.`),
      cards.length ? cards : el("p", {class: "muted"}, "No dead letters."),
    ];
  },
};

// -- Routing and refresh ------------------------------------------------------------------------

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [, kind, rest] = hash.match(/^\/([^/]*)\/?(.*)$/) || [];
  if (kind === "queue") return {view: "queue", name: decodeURIComponent(rest), state: {}};
  if (kind === "task") return {view: "task", name: decodeURIComponent(rest)};
  if (kind === "dead-letters") return {view: "deadLetters"};
  return {view: "queues"};
}

function mount() {
  route = parseRoute();
  generation += 1;
  view.replaceChildren();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === (route.view === "deadLetters" ? "dead-letters" : "queues"));
  }
  if (route.view === "queue") {
    const state = route.state;
    const search = el("input", {type: "search", id: "search", placeholder: "Search task names…",
                                "aria-label": "Search task names"});
    let typing = null;
    search.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => { state.search = search.value; state.after = ""; state.pages = []; refresh(); }, 200);
    });
    view.append(el("p", {}, el("a", {href: "#/"}, "← Queues")), el("h1", {}, short(route.name)),
                el("div", {class: "toolbar"}, search));
  }
  content = el("div", {id: "content"});
  view.append(content);
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  const mine = generation;
  const live = document.getElementById("live");
  try {
    const nodes = await views[route.view](route.name, route.state);
    if (mine !== generation) return;
    content.replaceChildren(...nodes.flat());
    live.classList.remove("stale");
    live.textContent = `live · ${new Date().toLocaleTimeString(undefined, {hour12: false})}`;
  } catch (error) {
    if (mine !== generation) return;
    content.replaceChildren(el("p", {class: "error"}, `Cannot load this view: ${error.message}`));
    live.classList.add("stale");
  }
  try {
    const overview = route.view === "queues" ? null : await api("/console/api/overview");
    if (overview) document.getElementById("dead-count").textContent = overview.deadLetters || "";
  } catch (error) { /* shown on the next refresh */ }
  if (mine === generation) timer = setTimeout(refresh, REFRESH_MS);
}

window.addEventListener("hashchange", mount);
mount();
