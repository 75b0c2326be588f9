// zephserver web UI: one page, talking JSON-RPC 2.0 over /ws (and the agent's REST API).
// Every action goes through the same tasks and permissions as scripts; nothing here is
// trusted for access control.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const PAGE = $("#page");
const ME = { name: PAGE.dataset.user, staff: PAGE.dataset.staff === "1" };
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"]);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
  seconds = Math.max(0, Math.round(seconds));
  const m = Math.floor(seconds / 60), s = seconds % 60, hr = Math.floor(m / 60);
  return hr ? `${hr}h${String(m % 60).padStart(2, "0")}m` : m ? `${m}m${String(s).padStart(2, "0")}s` : `${s}s`;
}

// -- the connection: reconnects with backoff; pages re-subscribe in onOpen -------------
// In a cluster it learns every node's URL (resources.status) once connected; when its
// node goes away it tries the next one, so the page moves to a node that answers.
function wsUrl(httpUrl) { return httpUrl.replace(/^http/, "ws") + "/ws"; }

class Rpc {
  constructor() {
    this.seq = 0; this.pending = new Map(); this.handlers = new Map(); this.openers = new Set();
    this.delay = 500; this.node = null; this.nodes = [];
    // this node first, then the others the page was served with (a cluster)
    const here = wsUrl(location.origin);
    const others = JSON.parse(PAGE.dataset.nodes || "[]").map(wsUrl).filter((u) => u !== here);
    this.targets = [here, ...others]; this.at = 0;
    this.connect();
  }
  connect() {
    const ws = new WebSocket(this.targets[this.at]);
    this.ws = ws;
    showConn("connecting", "connecting…");
    ws.onopen = () => {
      this.delay = 500;
      showConn("connected", "connected");
      this.learnNodes(ws);
      for (const fn of this.openers) fn();
    };
    ws.onmessage = (ev) => {
      const msgs = [].concat(JSON.parse(ev.data));
      for (const m of msgs) {
        if (m.id !== undefined && this.pending.has(m.id)) {
          const { resolve, reject } = this.pending.get(m.id);
          this.pending.delete(m.id);
          if (m.error) reject(m.error); else resolve(m.result);
        } else if (m.method) {
          for (const fn of this.handlers.get(m.method) || []) fn(m.params);
        }
      }
    };
    ws.onclose = () => {
      for (const { reject } of this.pending.values()) reject({ message: "connection lost" });
      this.pending.clear();
      // another node next (a cluster); once round all of them, back off
      this.at = (this.at + 1) % this.targets.length;
      const wait = this.at === 0 ? this.delay : 250;
      if (this.at === 0) this.delay = Math.min(this.delay * 2, 8000);
      showConn("reconnecting", `reconnecting in ${Math.round(wait / 100) / 10}s`);
      setTimeout(() => this.connect(), wait);
    };
  }
  async learnNodes(ws) {
    try {
      const r = await this.call("resources.status");
      if (ws !== this.ws) return;
      this.node = r.node;
      this.nodes = r.nodes || [];
      showConn("connected", this.nodes.length ? `connected to ${r.node}` : "connected");
      const here = this.targets[this.at];
      const others = this.nodes.filter((n) => n.url && wsUrl(n.url) !== here).map((n) => wsUrl(n.url));
      if (others.length) { this.targets = [here, ...others]; this.at = 0; }
    } catch (err) { /* learnt at the next connection */ }
  }
  call(method, params = {}) {
    return new Promise((resolve, reject) => {
      if (this.ws.readyState !== WebSocket.OPEN) return reject({ message: "not connected" });
      const id = ++this.seq;
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }
  on(method, fn) {
    if (!this.handlers.has(method)) this.handlers.set(method, new Set());
    this.handlers.get(method).add(fn);
    return () => this.handlers.get(method).delete(fn);
  }
  // run fn now if connected, and again after every reconnect; returns the undo
  whenOpen(fn) {
    this.openers.add(fn);
    if (this.ws.readyState === WebSocket.OPEN) fn();
    return () => this.openers.delete(fn);
  }
}

function showConn(kind, text) {
  const el = $("#conn");
  el.className = "conn " + kind;
  el.textContent = text;
}

const rpc = new Rpc();

// -- forms from an app's declared params -----------------------------------------------
function paramFields(app) {
  const fields = [];
  for (const [name, p] of Object.entries(app.params || {})) {
    let input;
    if (p.inList) {
      input = h("select", { name }, p.inList.map((v) => h("option", { value: v, selected: v === p.default }, String(v))));
    } else {
      const numeric = p.type === "int" || p.type === "float";
      input = h("input", { name, type: numeric ? "number" : "text", min: p.min, max: p.max,
        step: p.type === "float" ? "any" : null, value: p.default ?? "", required: p.required,
        pattern: p.regexp ? p.regexp.replace(/^\^|\$$/g, "") : null });
    }
    input.dataset.type = p.type;
    fields.push(h("div", { class: "field", "data-field": name },
      h("label", {}, name, p.description ? h("span", { class: "muted" }, ` — ${p.description}`) : null),
      input, h("p", { class: "error" })));
  }
  return fields;
}

// the apps of one kind, offered in a <select> (filled once; its params follow the choice)
async function loadApps(select, kind) {
  const apps = (await rpc.call("apps.list")).filter((a) => a.kind === kind);
  select.apps = apps;
  if (!select.options.length) {
    select.replaceChildren(...apps.map((a) => h("option", { value: a.name }, `${a.name} — ${a.description}`)));
    select.dispatchEvent(new Event("change"));
  }
  return apps;
}

function readParams(form) {
  const params = {};
  for (const el of form.querySelectorAll("[data-field] input, [data-field] select")) {
    if (el.value === "") continue;
    params[el.name] = el.dataset.type === "int" ? parseInt(el.value, 10)
      : el.dataset.type === "float" ? parseFloat(el.value) : el.value;
  }
  return params;
}

function showFieldError(form, err, fallback) {
  for (const p of form.querySelectorAll(".field .error")) p.textContent = "";
  const field = err && err.data && err.data.field;
  const slot = field && form.querySelector(`[data-field="${CSS.escape(field)}"] .error`);
  if (slot) slot.textContent = err.message; else fallback.textContent = (err && err.message) || String(err);
}

// -- pages -----------------------------------------------------------------------------
const pages = { jobs: jobsPage, job: jobPage, sessions: sessionsPage, processes: processesPage, nodes: nodesPage,
  account: accountPage };
let cleanup = [];

function route() {
  for (const fn of cleanup) fn();
  cleanup = [];
  const [, name = "jobs", arg] = location.hash.split("/");
  for (const a of document.querySelectorAll("nav a[data-page]"))
    a.classList.toggle("active", a.dataset.page === (name === "job" ? "jobs" : name));
  PAGE.replaceChildren();
  (pages[name] || jobsPage)(PAGE, arg);
}
window.addEventListener("hashchange", route);

function every(ms, fn) {
  const t = setInterval(fn, ms);
  cleanup.push(() => clearInterval(t));
}

function jobsPage(el) {
  const appSel = h("select", { id: "app" });
  const paramBox = h("div", { id: "params" });
  const msg = h("p", { id: "submit-msg", class: "muted" });
  const form = h("form", { id: "submit-form" }, h("label", { for: "app" }, "Application"), appSel, paramBox,
    h("div", {}, h("button", { type: "submit" }, "Submit")), msg);
  const strip = h("div", { class: "strip", id: "resources" });
  const body = h("tbody");
  const table = h("table", { id: "jobs" }, h("thead", {}, h("tr", {},
    h("th", {}, "Id"), h("th", {}, "App"), ME.staff ? h("th", {}, "Owner") : null, h("th", { class: "opt" }, "Node"),
    h("th", {}, "State"),
    h("th", {}, "Progress"), h("th", { class: "opt" }, "Elapsed"), h("th", { class: "opt" }, "ETA"),
    h("th", {}, "Actions"))), body);
  el.append(h("section", { class: "card" }, h("h2", {}, "Submit a job"), form),
    h("section", { class: "card" }, h("h2", {}, "Resources"), strip),
    h("section", { class: "card" }, h("h2", {}, "Jobs"), table));
  const jobs = new Map();

  appSel.addEventListener("change", () => {
    const app = (appSel.apps || []).find((a) => a.name === appSel.value);
    paramBox.replaceChildren(...(app ? paramFields(app) : []));
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    msg.textContent = "";
    try {
      const job = await rpc.call("jobs.submit", { app: appSel.value, params: readParams(form) });
      msg.textContent = `Job ${job.id} submitted.`;
      showFieldError(form, null, msg);
      msg.textContent = `Job ${job.id} submitted.`;
      upsert(job);
    } catch (err) { showFieldError(form, err, msg); }
  });

  function act(method, params) {
    rpc.call(method, params).catch((err) => alert(err.message || err));
  }
  function row(job) {
    const p = job.progress || {};
    const started = job.started ? Date.parse(job.started) : null;
    const end = job.finished ? Date.parse(job.finished) : Date.now();
    const waiting = job.state === "QUEUED" || job.state === "HELD";
    return h("tr", { "data-id": job.id, "data-state": job.state },
      h("td", {}, h("a", { href: `#/job/${job.id}` }, String(job.id))),
      h("td", {}, job.app + (job.name ? ` (${job.name})` : "")),
      ME.staff ? h("td", {}, job.owner) : null,
      h("td", { class: "opt node" }, job.node || ""),
      h("td", { title: job.state_reason }, h("span", { class: `state ${job.state}` }, job.state),
        h("div", { class: "muted" }, job.state_reason)),
      h("td", {}, p.percent !== undefined && p.percent !== null
        ? [h("progress", { max: 100, value: p.percent }), ` ${Math.round(p.percent)}%`] : ""),
      h("td", { class: "opt" }, started ? duration((end - started) / 1000) : ""),
      h("td", { class: "opt" }, !TERMINAL.has(job.state) && p.eta !== undefined ? duration(p.eta) : ""),
      h("td", { class: "actions" },
        !TERMINAL.has(job.state) ? h("button", { onclick: () => act("jobs.cancel", { id: job.id }) }, "Cancel") : null,
        job.state === "QUEUED" ? h("button", { onclick: () => act("queue.hold", { id: job.id }) }, "Hold") : null,
        job.state === "HELD" ? h("button", { onclick: () => act("queue.release", { id: job.id }) }, "Release") : null,
        job.state === "QUEUED" ? h("button", { title: "first in the queue", onclick: () => act("queue.move", { id: job.id, position: 0 }) }, "↑ Top") : null,
        job.state === "QUEUED" ? h("button", { title: "last in the queue", onclick: () => act("queue.move", { id: job.id, position: 1000000 }) }, "↓ End") : null,
        waiting ? h("button", { onclick: () => {
          const cores = prompt("Cores for this job", (job.resources || {}).cores);
          if (cores) act("jobs.update", { id: job.id, resources: { cores: parseInt(cores, 10) } });
        } }, "Cores…") : null));
  }
  function render() {
    const sorted = [...jobs.values()].sort((a, b) => b.id - a.id).slice(0, 200);
    body.replaceChildren(...sorted.map(row));
  }
  function upsert(job) { jobs.set(job.id, job); render(); }
  let resTimer = null;
  function resources() {
    if (resTimer) return;
    resTimer = setTimeout(async () => {
      resTimer = null;
      try {
        const r = await rpc.call("resources.status");
        const cap = r.capacity, free = r.free;
        const items = [h("span", {}, `Cores ${cap.cores - free.cores} / ${cap.cores}`),
          h("span", {}, `Memory ${cap.memory - free.memory} / ${cap.memory} MiB`),
          ...Object.entries(cap.licenses || {}).map(([k, v]) => h("span", {}, `${k} ${v - (free.licenses[k] || 0)} / ${v}`)),
          h("span", { class: "muted" }, `${r.running} running, ${r.queued} queued, ${r.held} held`)];
        strip.replaceChildren(...items);
      } catch (err) { /* shown again at the next update */ }
    }, 200);
  }
  cleanup.push(rpc.on("job.updated", (job) => { upsert(job); resources(); }));
  cleanup.push(rpc.whenOpen(async () => {
    await loadApps(appSel, "batch");
    await rpc.call("jobs.subscribe", {});
    const page = await rpc.call("jobs.list", { limit: 200 });
    jobs.clear();
    for (const job of page.jobs) jobs.set(job.id, job);
    render();
    resources();
  }));
  every(1000, () => { if ([...jobs.values()].some((j) => j.state === "RUNNING")) render(); });
}

const LOG_WINDOW = 512 * 1024;   // bytes shown at first; earlier ones on demand
const LOG_KEEP = 4 * 1024 * 1024; // characters kept in the page

function jobPage(el, idText) {
  const id = parseInt(idText, 10);
  const info = h("div", { id: "job-info" });
  const controls = h("div", { class: "toolbar", id: "controls" });
  const log = h("pre", { class: "log", id: "log" });
  const follow = h("input", { type: "checkbox", id: "follow", checked: true });
  const search = h("input", { type: "search", id: "search", placeholder: "search the log" });
  const found = h("span", { class: "muted", id: "found" });
  const earlier = h("button", { id: "earlier", hidden: true }, "Load earlier");
  el.append(h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    h("section", { class: "card" }, h("h2", {}, `Job ${id}`), info, controls),
    h("section", { class: "card" }, h("h2", {}, "Output"),
      h("div", { class: "toolbar" }, h("label", {}, follow, " follow the end"), search, found, earlier), log));
  let first = null, next = null, job = null;  // the byte range shown: [first, next)

  function showInfo(j) {
    job = j;
    const rows = [["State", h("span", { class: `state ${j.state}` }, j.state)], ["Reason", j.state_reason],
      ["App", j.app], ["Owner", j.owner], ["Node", j.node || ""], ["Exit code", j.exit_code ?? ""], ["Created", j.created],
      ["Started", j.started ?? ""], ["Finished", j.finished ?? ""],
      ["Progress", j.progress && j.progress.percent !== undefined ? `${Math.round(j.progress.percent)}%` : ""],
      ["Parameters", JSON.stringify(j.params)], ["Resources", JSON.stringify(j.resources)]];
    info.replaceChildren(h("table", {}, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))));
  }
  function append(text) {
    log.append(text);
    if (log.textContent.length > LOG_KEEP) {  // keep the page light with a huge log
      log.textContent = log.textContent.slice(-LOG_KEEP / 2);
      earlier.hidden = false;
    }
    if (follow.checked) log.scrollTop = log.scrollHeight;
    if (search.value) doSearch();
  }
  function doSearch() {
    const term = search.value;
    if (!term) { found.textContent = ""; return; }
    const lines = log.textContent.split("\n").filter((l) => l.includes(term));
    found.textContent = `${lines.length} line(s): ` + lines.slice(-3).join(" | ").slice(0, 300);
  }
  search.addEventListener("input", doSearch);
  earlier.addEventListener("click", async () => {
    const start = Math.max(0, first - LOG_WINDOW);
    const out = await rpc.call("jobs.output", { id, offset: start, limit: first - start });
    log.prepend(out.data);
    first = start;
    earlier.hidden = first === 0;
  });
  cleanup.push(rpc.on("job.updated", (j) => { if (j.id === id) showInfo(j); }));
  cleanup.push(rpc.on("job.output", (o) => {
    if (o.id !== id || next === null) return;
    if (o.next_offset <= next) return;        // already shown (a resend after reconnect)
    const skip = Math.max(0, next - o.offset); // overlapping part
    append(o.data.slice(skip));
    next = o.next_offset;
  }));
  cleanup.push(rpc.whenOpen(async () => {
    try {
      const j = await rpc.call("jobs.get", { id });
      showInfo(j);
      if (next === null) {
        const size = (await rpc.call("jobs.output", { id, offset: 0, limit: 1 })).size;
        first = next = Math.max(0, size - LOG_WINDOW);
        earlier.hidden = first === 0;
      }
      await rpc.call("jobs.subscribe", { id, offset: next });
      const app = (await rpc.call("apps.list")).find((a) => a.name === j.app);
      controls.replaceChildren(...Object.entries((app && app.controls) || {}).map(([name, desc]) =>
        h("button", { title: desc, onclick: () => rpc.call("jobs.control", { id, control: name }).catch((e) => alert(e.message)) }, name)),
      !TERMINAL.has(j.state) ? h("button", { id: "cancel", onclick: () => rpc.call("jobs.cancel", { id }).catch((e) => alert(e.message)) }, "Cancel") : null);
    } catch (err) { info.textContent = err.message || String(err); }
  }));
  cleanup.push(() => { if (rpc.ws.readyState === WebSocket.OPEN) rpc.call("jobs.unsubscribe", { id }).catch(() => {}); });
}

function sessionsPage(el) {
  const appSel = h("select", { id: "session-app" });
  const paramBox = h("div");
  const msg = h("p", { class: "muted", id: "session-msg" });
  const form = h("form", { id: "session-form" }, h("label", {}, "Application"), appSel, paramBox,
    h("div", {}, h("button", { type: "submit" }, "Launch")), msg);
  const body = h("tbody");
  el.append(h("section", { class: "card" }, h("h2", {}, "Launch a session"), form),
    h("section", { class: "card" }, h("h2", {}, "Sessions"), h("table", { id: "sessions" }, h("thead", {}, h("tr", {},
      h("th", {}, "Id"), h("th", {}, "App"), h("th", {}, "State"), h("th", {}, "URL"), h("th", {}, "Actions"))), body)));
  const sessions = new Map();
  appSel.addEventListener("change", () => {
    const app = (appSel.apps || []).find((a) => a.name === appSel.value);
    paramBox.replaceChildren(...(app ? paramFields(app) : []));
  });
  function render() {
    body.replaceChildren(...[...sessions.values()].sort((a, b) => b.id - a.id).map((s) =>
      h("tr", { "data-id": s.id, "data-state": s.state },
        h("td", {}, s.id), h("td", {}, s.application),
        h("td", { title: s.state_reason || "" }, h("span", { class: `state ${s.state}` }, s.state)),
        h("td", {}, s.sessionURL && s.state === "RUNNING" ? h("a", { href: s.sessionURL, target: "_blank" }, s.sessionURL) : ""),
        h("td", { class: "actions" }, !TERMINAL.has(s.state) ? h("button", {
          onclick: () => rpc.call("sessions.stop", { id: s.id }).catch((e) => alert(e.message)) }, "Stop") : null))));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    msg.textContent = "starting…";
    try {
      const s = await rpc.call("sessions.start", { application: appSel.value, ...readParams(form) });
      sessions.set(s.id, s);
      render();
      msg.textContent = `Session ${s.id} is ${s.state}.`;
    } catch (err) { showFieldError(form, err, msg); }
  });
  cleanup.push(rpc.on("session.updated", (s) => { sessions.set(s.id, { ...(sessions.get(s.id) || {}), ...s }); render(); }));
  cleanup.push(rpc.whenOpen(async () => {
    await loadApps(appSel, "session");
    await rpc.call("jobs.subscribe", {});
    sessions.clear();
    for (const s of await rpc.call("sessions.list", {})) sessions.set(s.id, s);
    render();
  }));
}

// -- the cluster's nodes: state, what is in use, the caller's jobs on each --------------
function nodesPage(el) {
  const body = h("tbody");
  const note = h("p", { class: "muted", id: "nodes-note" });
  el.append(h("section", { class: "card" }, h("h2", {}, "Nodes"), note,
    h("table", { id: "nodes" }, h("thead", {}, h("tr", {}, h("th", {}, "Node"), h("th", {}, "State"),
      h("th", {}, "Cores"), h("th", {}, "Memory"), h("th", {}, "Licences"), h("th", {}, "Running"),
      h("th", {}, "Queued"), h("th", {}, ME.staff ? "Jobs" : "Your jobs"))), body)));
  const used = (n, k) => n.capacity[k] - n.free[k];
  function row(n, jobs) {
    const up = n.state === "up";
    const licences = up ? Object.entries(n.capacity.licenses || {}).map(([k, v]) => `${k} ${v - (n.free.licenses[k] || 0)} / ${v}`).join(", ") : "";
    return h("tr", { "data-node": n.node, "data-state": n.state },
      h("td", {}, n.url ? h("a", { href: n.url + "/" }, n.node) : n.node, n.node === rpc.node ? h("span", { class: "muted" }, " (this page)") : null),
      h("td", { title: n.reason || "" }, h("span", { class: `state ${up ? "RUNNING" : "LOST"}` }, n.state)),
      h("td", {}, up ? `${used(n, "cores")} / ${n.capacity.cores}` : ""),
      h("td", {}, up ? `${used(n, "memory")} / ${n.capacity.memory} MiB` : ""),
      h("td", {}, licences),
      h("td", {}, up ? String(n.running) : ""), h("td", {}, up ? String(n.queued) : ""),
      h("td", { class: "jobs" }, (jobs.get(n.node) || []).flatMap((j) => [h("a", { href: `#/job/${j.id}` }, String(j.id)), " "])));
  }
  async function load() {
    try {
      const [r, page] = await Promise.all([rpc.call("resources.status"),
        rpc.call("jobs.list", { state: ["STARTING", "RUNNING"], limit: 500 })]);
      const jobs = new Map();
      for (const j of page.jobs) jobs.set(j.node, [...(jobs.get(j.node) || []), j]);
      const nodes = r.nodes || [r];
      note.textContent = r.nodes ? `${nodes.filter((n) => n.state === "up").length} of ${nodes.length} nodes up` : "a single node";
      body.replaceChildren(...nodes.map((n) => row(n, jobs)));
    } catch (err) { note.textContent = err.message || "not connected"; }
  }
  cleanup.push(rpc.whenOpen(load));
  every(2000, load);
}

async function rest(method, path, body) {
  const resp = await fetch(path, { method, credentials: "same-origin",
    headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw { message: data.error || resp.statusText, data };
  return data;
}

function processesPage(el) {
  const fields = ["app", "node", "process_type", "source_url"].map((name) =>
    h("div", { class: "field", "data-field": name }, h("label", {}, name), h("input", { name, required: true }), h("p", { class: "error" })));
  const msg = h("p", { class: "muted" });
  const form = h("form", { id: "process-form" }, fields, h("div", {}, h("button", { type: "submit" }, "Create")), msg);
  const body = h("tbody");
  const consoleBox = h("pre", { class: "log", id: "console", hidden: true });
  const consoleTitle = h("h2", { hidden: true });
  el.append(h("section", { class: "card" }, h("h2", {}, "New process"), form),
    h("section", { class: "card" }, h("h2", {}, "Processes"), h("table", { id: "processes" }, h("thead", {}, h("tr", {},
      h("th", {}, "Slug"), h("th", {}, "State"), h("th", { class: "opt" }, "Restarts"), h("th", { class: "opt" }, "Pid"),
      h("th", { class: "opt" }, "Last exit"), h("th", {}, "Actions"))), body)),
    h("section", { class: "card" }, consoleTitle, consoleBox));
  let consoleWs = null;
  cleanup.push(() => consoleWs && consoleWs.close());
  function attach(p) {
    if (consoleWs) consoleWs.close();
    consoleBox.hidden = consoleTitle.hidden = false;
    consoleTitle.textContent = `Console of ${p.slug}`;
    consoleBox.textContent = "";
    consoleWs = new WebSocket(p.attach);
    consoleWs.onmessage = (ev) => {
      consoleBox.append(ev.data + "\n");
      if (consoleBox.textContent.length > LOG_KEEP) consoleBox.textContent = consoleBox.textContent.slice(-LOG_KEEP / 2);
      consoleBox.scrollTop = consoleBox.scrollHeight;
    };
    consoleWs.onclose = () => consoleBox.append("[console closed]\n");
  }
  async function refresh() {
    try {
      const { processes } = await rest("GET", "/agent/list-processes");
      body.replaceChildren(...processes.map((p) => h("tr", { "data-slug": p.slug, "data-state": p.state },
        h("td", {}, p.slug), h("td", { title: p.state_reason }, h("span", { class: `state ${p.state}` }, p.state)),
        h("td", { class: "opt" }, String(p.restarts)), h("td", { class: "opt" }, p.pid ?? ""),
        h("td", { class: "opt" }, p.exit_code ?? ""),
        h("td", { class: "actions" }, h("button", { onclick: () => attach(p) }, "Console"),
          h("button", { onclick: () => rest("POST", `/agent/delete-process/${p.slug}`, {}).then(refresh).catch((e) => alert(e.message)) }, "Delete")))));
    } catch (err) { msg.textContent = err.message; }
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries([...form.querySelectorAll("input")].map((i) => [i.name, i.value]));
    try {
      const p = await rest("POST", "/agent/create-process", data);
      msg.textContent = `Process ${p.slug} created.`;
      showFieldError(form, null, msg);
      msg.textContent = `Process ${p.slug} created.`;
      refresh();
    } catch (err) { showFieldError(form, { message: err.message, data: { field: err.data && err.data.field } }, msg); }
  });
  refresh();
  every(1000, refresh);  // the agent has no push of states: a light poll while the page is open
}

function accountPage(el) {
  const list = h("tbody");
  const name = h("input", { id: "token-name", placeholder: "what it is for" });
  const shown = h("div", { id: "new-token" });
  el.append(h("section", { class: "card" }, h("h2", {}, `Account: ${ME.name}`),
    h("p", {}, h("a", { href: "/accounts/password_change/" }, "Change my password"))),
  h("section", { class: "card" }, h("h2", {}, "API tokens"),
    h("p", { class: "muted" }, "For scripts: send Authorization: Bearer <token>. A new token is shown once."),
    h("form", { id: "token-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const t = await rpc.call("tokens.create", { name: name.value });
      shown.replaceChildren(h("p", { class: "new-token" }, "New token (copy it now, it is not shown again): ", h("code", {}, t.token)));
      load();
    } }, name, " ", h("button", { type: "submit" }, "Create a token")), shown,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Prefix"), h("th", {}, "Name"), h("th", {}, "Created"),
      h("th", {}, "State"), h("th", {}))), list)));
  async function load() {
    const tokens = await rpc.call("tokens.list");
    list.replaceChildren(...tokens.map((t) => h("tr", {}, h("td", {}, h("code", {}, t.prefix + "…")), h("td", {}, t.name),
      h("td", {}, t.created), h("td", {}, t.revoked ? "revoked" : "active"),
      h("td", {}, t.revoked ? "" : h("button", { onclick: async () => { await rpc.call("tokens.revoke", { prefix: t.prefix }); load(); } }, "Revoke")))));
  }
  cleanup.push(rpc.whenOpen(load));
}

route();
