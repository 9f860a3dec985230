// runtree ui: the runs a store recorded, as lists and waterfalls. Hand-written, no framework.
// User data only ever reaches the page as text: every node is built with createElement and
// textContent (never as markup), and the server's Content-Security-Policy forbids inline code.
"use strict";

(() => {
  const STATUSES = ["running", "completed", "failed", "cancelled", "interrupted"];
  const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };
  const PAGE = 50;
  const main = document.getElementById("main");
  const liveBadge = document.getElementById("live");
  let cleanups = []; // closes the event streams of the view on screen
  const ui = (window.runtreeUI = { renderMs: null, rows: 0, renders: 0 });

  // -- helpers ---------------------------------------------------------------------------

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : String(kid)); // a string becomes a text node
    }
    return e;
  }

  async function api(path, params) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
    const r = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    if (!r.ok) throw new Error((body && body.error) || `the server answered ${r.status}`);
    return body;
  }

  function stream(path, params, handlers) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
    const es = new EventSource(url);
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
    }
    let done = false;
    const close = () => {
      if (done) return;
      done = true;
      es.close();
      live(-1);
    };
    es.addEventListener("end", close);
    live(1);
    cleanups.push(close);
    return close;
  }

  let liveCount = 0;
  function live(delta) {
    liveCount += delta;
    liveBadge.hidden = liveCount <= 0;
    document.body.dataset.live = String(liveCount);
  }

  const pad = (n) => String(n).padStart(2, "0");
  function when(epoch) {
    if (epoch === null || epoch === undefined) return "-";
    const d = new Date(epoch * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  const whenIso = (iso) => (iso ? when(Date.parse(iso) / 1000) : "-");
  function took(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    if (seconds < 0.001) return `${(seconds * 1e6).toFixed(0)} µs`;
    if (seconds < 1) return `${(seconds * 1000).toFixed(1)} ms`;
    if (seconds < 120) return `${seconds.toFixed(2)} s`;
    return `${(seconds / 60).toFixed(1)} min`;
  }
  const json = (v) => JSON.stringify(v, null, 2);
  const statusEl = (s) => el("span", { class: `status ${s}` }, s);
  const errorText = (e) => (e ? `${e.type}: ${e.message}` : "");

  function hashParams() {
    const h = location.hash.slice(1) || "/runs";
    const at = h.indexOf("?");
    return [at < 0 ? h : h.slice(0, at), new URLSearchParams(at < 0 ? "" : h.slice(at + 1))];
  }
  function go(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "" && v !== 0) q.set(k, String(v));
    }
    const s = q.toString();
    location.hash = `#${path}${s ? "?" + s : ""}`;
  }

  // Rows of a list table: Enter opens, arrows move.
  function listKeys(tbody) {
    tbody.addEventListener("keydown", (ev) => {
      const row = ev.target.closest("tr");
      if (!row) return;
      if (ev.key === "Enter") row.click();
      else if (ev.key === "ArrowDown" && row.nextElementSibling) row.nextElementSibling.focus();
      else if (ev.key === "ArrowUp" && row.previousElementSibling) row.previousElementSibling.focus();
      else return;
      ev.preventDefault();
    });
  }

  // -- runs ------------------------------------------------------------------------------

  function showRuns(q) {
    const status = q.get("status") || "";
    const flow = q.get("flow") || "";
    const range = q.get("range") || "";
    const offset = Math.max(0, parseInt(q.get("offset") || "0", 10) || 0);
    const since = RANGES[range] ? (Date.now() / 1000 - RANGES[range]).toFixed(3) : "";
    const params = { status, flow, since, limit: PAGE };

    const statusSel = el("select", { id: "f-status", "aria-label": "status" },
      el("option", { value: "" }, "any status"),
      ...STATUSES.map((s) => el("option", { value: s, selected: s === status }, s)));
    const flowIn = el("input", { id: "f-flow", type: "search", placeholder: "flow (module:name)",
      value: flow, "aria-label": "flow", size: 28 });
    const rangeSel = el("select", { id: "f-range", "aria-label": "started within" },
      el("option", { value: "" }, "any time"),
      ...Object.keys(RANGES).map((r) => el("option", { value: r, selected: r === range }, `last ${r}`)));
    const apply = () => go("/runs", { status: statusSel.value, flow: flowIn.value.trim(), range: rangeSel.value });
    statusSel.addEventListener("change", apply);
    rangeSel.addEventListener("change", apply);
    const form = el("form", { class: "filters", role: "search" },
      el("label", null, "Status", statusSel), el("label", null, "Flow", flowIn),
      el("label", null, "Started", rangeSel), el("button", { type: "submit" }, "Filter"));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); apply(); });

    const tbody = el("tbody", { id: "runs-body" });
    listKeys(tbody);
    const table = el("table", { class: "list", id: "runs" },
      el("thead", null, el("tr", null,
        el("th", { class: "col-status" }, "Status"), el("th", null, "Run"),
        el("th", null, "Flow / command"), el("th", { class: "col-when" }, "Started"),
        el("th", { class: "col-took" }, "Took"))),
      tbody);
    const newer = el("button", { type: "button", disabled: offset === 0 }, "← Newer");
    const older = el("button", { type: "button", disabled: true }, "Older →");
    const info = el("span", { class: "muted" });
    const note = el("span", { class: "notice", hidden: true }, "New runs recorded. ",
      el("a", { href: "#/runs" }, "Show the newest"));
    let next = null;
    newer.addEventListener("click", () => go("/runs", { status, flow, range, offset: Math.max(0, offset - PAGE) }));
    older.addEventListener("click", () => next !== null && go("/runs", { status, flow, range, offset: next }));
    main.replaceChildren(el("h1", null, "Runs"), form, table, el("div", { class: "pager" }, newer, older, info, note));

    const render = (body) => {
      next = body.next_offset;
      older.disabled = next === null;
      const first = offset + 1;
      info.textContent = body.runs.length ? `runs ${first}–${offset + body.runs.length}` : "";
      if (!body.runs.length) {
        tbody.replaceChildren(el("tr", null, el("td", { colspan: 5, class: "muted" },
          offset ? "No more runs." : "No runs recorded yet (with these filters).")));
        return;
      }
      // A live update replaces the rows: the row that had the focus keeps it.
      const had = tbody.contains(document.activeElement) ? document.activeElement.closest("tr") : null;
      const focusId = had ? had.dataset.id : null;
      tbody.replaceChildren(...body.runs.map((r) => {
        const label = r.command ? `${r.command} (session ${r.session_id})` : r.flow || r.name;
        const tr = el("tr", { tabindex: 0, "data-id": r.root_id, title: errorText(r.error) || null },
          el("td", { class: "col-status" }, statusEl(r.status)),
          el("td", null, r.root_id),
          el("td", null, label),
          el("td", { class: "col-when" }, when(r.created_at)),
          el("td", { class: "col-took" }, took(r.duration)));
        tr.addEventListener("click", () => go("/run", { id: r.root_id }));
        return tr;
      }));
      if (focusId !== null) {
        const again = [...tbody.rows].find((tr) => tr.dataset.id === focusId);
        if (again) again.focus();
      }
    };
    api("/api/runs", { ...params, offset }).then(render, (e) => {
      tbody.replaceChildren(el("tr", null, el("td", { colspan: 5, class: "error-text" }, e.message)));
    });
    if (offset === 0) {
      stream("/api/events/runs", params, { runs: render });
    } else {
      let seen = null;
      stream("/api/events/runs", { ...params, limit: 1 }, {
        runs: (body) => {
          const top = body.runs.length ? body.runs[0].root_id : "";
          if (seen !== null && top !== seen) note.hidden = false;
          seen = top;
        },
      });
    }
  }

  // -- a run as a waterfall --------------------------------------------------------------

  const ROW = 24; // px, as --row in app.css
  const OVERSCAN = 20; // rows drawn above and below the view

  class Waterfall {
    constructor(container, runId) {
      this.container = container;
      this.runId = runId;
      this.collapsed = new Set();
      this.selected = null;
      this.focus = 0;
      this.first = true;
      this.head = el("div", { class: "runhead" });
      this.axis = el("div", { class: "axis", "aria-hidden": "true" });
      this.tree = el("div", { class: "tree", role: "tree", tabindex: 0, "aria-label": "run tree" });
      this.details = el("aside", { class: "details", hidden: true, "aria-live": "polite" });
      this.title = el("h1");
      this.errorBox = el("p", { class: "error-text", hidden: true });
      container.replaceChildren(this.title, this.head, this.errorBox,
        el("div", { class: "runbody" },
          el("div", { class: "waterfall" }, this.axis, this.tree), this.details));
      this.spacer = el("div", { class: "spacer" });
      this.tree.append(this.spacer);
      this.tree.addEventListener("click", (ev) => this.onClick(ev));
      this.tree.addEventListener("keydown", (ev) => this.onKey(ev));
      this.tree.addEventListener("focus", () => this.paintFocus());
      let queued = false;
      this.tree.addEventListener("scroll", () => {
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => { queued = false; this.renderWindow(); });
      });
    }

    update(data) {
      const t = performance.now();
      this.data = data;
      this.nodes = data.nodes;
      this.byId = new Map();
      this.nodes.forEach((n, i) => this.byId.set(n.id, i));
      if (this.first) {
        this.first = false;
        this.openOnFailingPath();
      }
      this.renderHead();
      this.renderRows();
      void this.tree.offsetHeight; // layout included in the measured time
      ui.renderMs = performance.now() - t;
      ui.rows = this.nodes.length;
      ui.renders += 1;
      document.body.dataset.renders = String(ui.renders);
      document.body.dataset.rows = String(this.nodes.length);
      if (this.selected !== null && this.byId.has(this.selected)) this.showDetails(this.selected, false);
    }

    // A failing run opens on its failing path: the path expanded, the other subtrees
    // folded, the deepest failed node selected with its error shown.
    openOnFailingPath() {
      const path = new Set(this.data.failing);
      if (!path.size) return;
      this.nodes.forEach((n, i) => {
        if (this.hasKids(i) && !path.has(n.id)) this.collapsed.add(n.id);
      });
      const last = this.data.failing[this.data.failing.length - 1];
      this.selected = last;
      this.focus = this.byId.get(last) || 0;
      this.scrollToFocus = true;
    }

    hasKids(i) {
      return i + 1 < this.nodes.length && this.nodes[i + 1].depth > this.nodes[i].depth;
    }

    renderHead() {
      const run = this.data.run;
      this.title.textContent = `${run.name} · ${run.root_id}`;
      const item = (k, v) => el("span", null, `${k} `, el("b", null, v));
      this.head.replaceChildren(...[
        statusEl(run.status),
        item("flow", run.flow || "-"),
        run.session_id ? item("session", `${run.session_id} / ${run.command}`) : null,
        item("started", when(run.created_at)),
        item("took", took(run.duration)),
        item("nodes", String(this.nodes.length)),
      ].filter(Boolean));
      const err = run.error;
      this.errorBox.hidden = !err;
      this.errorBox.textContent = err ? `${err.type}: ${err.message}` : "";
    }

    span() {
      const nodes = this.nodes;
      let t0 = this.data.run.created_at;
      let t1 = t0;
      for (const n of nodes) {
        if (n.start < t0) t0 = n.start;
        const end = n.end === null ? this.data.now : n.end;
        if (end > t1) t1 = end;
      }
      if (this.data.run.completed_at && this.data.run.completed_at > t1) t1 = this.data.run.completed_at;
      return [t0, Math.max(t1 - t0, 1e-6)];
    }

    renderAxis(t0, span) {
      // Positions through the CSSOM: the CSP allows no style attributes.
      const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
        const tick = el("span", null, f === 0 ? "0" : took(span * f));
        tick.style.left = `${f * 100}%`;
        return tick;
      });
      this.axis.replaceChildren(...ticks);
    }

    // Rows are virtualised: only the rows in view (and a margin) exist in the page, each
    // absolutely positioned over a spacer as tall as all visible rows. The cost of a
    // render is a screenful of rows, whatever the size of the tree.
    renderRows() {
      const [t0, span] = this.span();
      this.t0 = t0;
      this.spanS = span;
      this.path = new Set(this.data.failing);
      this.renderAxis(t0, span);
      this.applyVisibility();
      this.spacer.style.height = `${this.vis.length * ROW}px`;
      if (this.scrollToFocus) {
        this.scrollToFocus = false;
        const at = this.pos[this.focus];
        if (at >= 0) this.tree.scrollTop = Math.max(0, at * ROW - this.tree.clientHeight / 2);
      }
      this.renderWindow();
    }

    renderWindow() {
      if (!this.vis) return;
      const view = this.tree.clientHeight || 800;
      const top = this.tree.scrollTop;
      const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
      const last = Math.min(this.vis.length, Math.ceil((top + view) / ROW) + OVERSCAN);
      const frag = document.createDocumentFragment();
      const proto = this.proto || (this.proto = el("div", { class: "row", role: "treeitem" },
        el("div", { class: "label" }, el("span", { class: "tw" }), el("span", { class: "name" })),
        el("div", { class: "track" }, el("div", { class: "bar" }))));
      const now = this.data.now;
      for (let k = first; k < last; k++) {
        const i = this.vis[k];
        const n = this.nodes[i];
        const kids = this.hasKids(i);
        const row = proto.cloneNode(true);
        const label = row.firstChild;
        const bar = row.lastChild.firstChild;
        row.id = `n-${i}`;
        row.style.top = `${k * ROW}px`;
        row.setAttribute("data-node", n.id);
        row.setAttribute("aria-level", n.depth + 1);
        if (kids) row.setAttribute("aria-expanded", !this.collapsed.has(n.id));
        if (this.path.has(n.id)) row.classList.add("on-path");
        if (n.id === this.selected) row.classList.add("selected");
        if (i === this.focus) row.classList.add("focus");
        label.style.paddingLeft = `${4 + n.depth * 14}px`;
        if (kids) label.firstChild.textContent = this.collapsed.has(n.id) ? "▸" : "▾";
        label.lastChild.textContent = n.name;
        if (n.key !== null) label.append(el("span", { class: "key", title: "journal key" }, n.key));
        if (n.attempt > 1) label.append(el("span", { class: "mark" }, `attempt ${n.attempt}`));
        if (n.replayed) label.append(el("span", { class: "mark replay", title: "replayed from the journal" }, "↺ replayed"));
        if (n.error) label.append(el("span", { class: "mark err", title: errorText(n.error) }, "✗"));
        const end = n.end === null ? now : n.end;
        bar.className = n.replayed ? `bar ${n.status} replayed` : `bar ${n.status}`;
        bar.style.cssText = `left:${((n.start - this.t0) / this.spanS) * 100}%;` +
          `width:${(Math.max(end - n.start, 0) / this.spanS) * 100}%`;
        frag.append(row);
      }
      this.spacer.style.height = `${this.vis.length * ROW}px`;
      this.spacer.replaceChildren(frag);
      const focused = document.getElementById(`n-${this.focus}`);
      if (focused) this.tree.setAttribute("aria-activedescendant", focused.id);
      else this.tree.removeAttribute("aria-activedescendant");
    }

    // The visible nodes in order (``vis``) and each node's place among them (``pos``,
    // -1 when folded away).
    applyVisibility() {
      const count = this.nodes.length;
      const vis = [];
      const pos = new Int32Array(count).fill(-1);
      let hideBelow = Infinity;
      for (let i = 0; i < count; i++) {
        const d = this.nodes[i].depth;
        if (d <= hideBelow) {
          hideBelow = this.collapsed.has(this.nodes[i].id) ? d : Infinity;
          pos[i] = vis.length;
          vis.push(i);
        }
      }
      this.vis = vis;
      this.pos = pos;
    }

    toggle(i, open) {
      const n = this.nodes[i];
      if (!this.hasKids(i)) return;
      const isOpen = !this.collapsed.has(n.id);
      const want = open === undefined ? !isOpen : open;
      if (want === isOpen) return;
      if (want) this.collapsed.delete(n.id);
      else this.collapsed.add(n.id);
      this.applyVisibility();
      this.renderWindow();
    }

    // Scroll so that node ``i`` is in view.
    reveal(i) {
      const at = this.pos[i];
      if (at < 0) return;
      const top = at * ROW;
      const view = this.tree.clientHeight;
      if (top < this.tree.scrollTop) this.tree.scrollTop = top;
      else if (top + ROW > this.tree.scrollTop + view) this.tree.scrollTop = top + ROW - view;
    }

    onClick(ev) {
      const row = ev.target.closest(".row");
      if (!row) return;
      const i = Number(row.id.slice(2));
      this.focus = i;
      if (ev.target.classList.contains("tw")) this.toggle(i);
      else this.select(i);
      this.paintFocus();
    }

    visibleStep(i, step) {
      const at = this.pos[i] + step;
      return at >= 0 && at < this.vis.length ? this.vis[at] : i;
    }

    onKey(ev) {
      const i = this.focus;
      const n = this.nodes[i];
      if (!n) return;
      switch (ev.key) {
        case "ArrowDown": this.focus = this.visibleStep(i, 1); break;
        case "ArrowUp": this.focus = this.visibleStep(i, -1); break;
        case "Home": this.focus = this.vis[0]; break;
        case "End": this.focus = this.vis[this.vis.length - 1]; break;
        case "ArrowRight":
          if (this.hasKids(i) && this.collapsed.has(n.id)) this.toggle(i, true);
          else if (this.hasKids(i)) this.focus = i + 1;
          break;
        case "ArrowLeft":
          if (this.hasKids(i) && !this.collapsed.has(n.id)) this.toggle(i, false);
          else {
            for (let j = i - 1; j >= 0; j--) {
              if (this.nodes[j].depth < n.depth) { this.focus = j; break; }
            }
          }
          break;
        case "Enter": case " ": this.select(i); break;
        default: return;
      }
      ev.preventDefault();
      this.reveal(this.focus);
      this.paintFocus();
    }

    // Focus and selection change classes in place: rebuilding rows between a mousedown
    // and its click would lose the click.
    paintFocus() {
      if (!this.vis) return;
      const old = this.spacer.querySelector(".row.focus");
      if (old) old.classList.remove("focus");
      let row = document.getElementById(`n-${this.focus}`);
      if (!row && this.pos[this.focus] >= 0) {
        this.renderWindow(); // scrolled to a row not drawn yet
        row = document.getElementById(`n-${this.focus}`);
      }
      if (row) {
        row.classList.add("focus");
        this.tree.setAttribute("aria-activedescendant", row.id);
      }
    }

    select(i) {
      const old = this.spacer.querySelector(".row.selected");
      if (old) old.classList.remove("selected");
      const row = document.getElementById(`n-${i}`);
      if (row) row.classList.add("selected");
      this.selected = this.nodes[i].id;
      this.showDetails(this.selected, true);
    }

    // What the light node holds shows at once; input, output, tags and metadata follow.
    showDetails(nodeId, fresh) {
      const n = this.nodes[this.byId.get(nodeId)];
      const box = this.details;
      box.hidden = false;
      const close = el("button", { type: "button", class: "close", "aria-label": "close details" }, "×");
      close.addEventListener("click", () => {
        box.hidden = true;
        this.selected = null;
        this.renderWindow();
        this.tree.focus();
      });
      const dl = el("dl", null);
      const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", null, k), el("dd", null, v)); };
      add("status", n.status);
      add("kind", n.kind);
      add("key", n.key);
      add("attempt", n.attempt > 1 ? String(n.attempt) : null);
      add("replayed", n.replayed ? "yes (from the journal)" : null);
      add("started", when(n.start));
      add("took", took(n.end === null ? null : n.end - n.start));
      add("node id", n.id);
      const parts = [close, el("h3", null, n.name), dl];
      if (n.error) parts.push(el("h4", null, "Error"), el("pre", { class: "error-text node-error" }, errorText(n.error)));
      const more = el("div", { class: "values" }, fresh ? el("p", { class: "muted" }, "Loading values…") : null);
      parts.push(more);
      box.replaceChildren(...parts);
      const sig = `${n.status}|${n.end}`;
      if (!fresh && this.detailSig === `${nodeId}|${sig}` && this.lastValues) {
        more.replaceChildren(...this.lastValues);
        return;
      }
      api("/api/node", { run: this.runId, node: nodeId }).then((full) => {
        if (this.selected !== nodeId) return;
        const blocks = [];
        for (const [label, key] of [["Input", "input"], ["Output", "output"], ["Tags", "tags"], ["Metadata", "metadata"]]) {
          const v = full[key];
          const empty = v === null || (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0);
          if (empty && (key === "tags" || key === "metadata")) continue;
          blocks.push(el("h4", null, label), el("pre", { class: `v-${key}` }, json(v)));
        }
        this.detailSig = `${nodeId}|${sig}`;
        this.lastValues = blocks;
        more.replaceChildren(...blocks);
      }, (e) => more.replaceChildren(el("p", { class: "error-text" }, e.message)));
    }
  }

  async function runInto(container, runId) {
    container.replaceChildren(el("p", { class: "muted" }, "Loading the run…"));
    let data;
    try {
      data = await api("/api/run", { id: runId });
    } catch (e) {
      container.replaceChildren(el("p", { class: "error-text" }, e.message));
      return;
    }
    const view = new Waterfall(container, runId);
    view.update(data);
    if (data.run.status === "running") {
      stream("/api/events/run", { id: runId }, { tree: (d) => view.update(d) });
    }
    return view;
  }

  function showRun(id) {
    if (!id) return showRuns(new URLSearchParams());
    const box = el("div", { id: "run" });
    main.replaceChildren(el("p", null, el("a", { href: "#/runs" }, "← Runs")), box);
    runInto(box, id);
  }

  // -- sessions --------------------------------------------------------------------------

  async function showSessions() {
    const tbody = el("tbody", { id: "sessions-body" });
    listKeys(tbody);
    main.replaceChildren(el("h1", null, "Sessions"),
      el("table", { class: "list", id: "sessions" },
        el("thead", null, el("tr", null, el("th", null, "Session"), el("th", null, "Project"),
          el("th", { class: "col-when" }, "Started"), el("th", { class: "col-status" }, "State"),
          el("th", { class: "col-took" }, "Commands"))),
        tbody));
    let body;
    try {
      body = await api("/api/sessions", { limit: 200 });
    } catch (e) {
      tbody.replaceChildren(el("tr", null, el("td", { colspan: 5, class: "error-text" }, e.message)));
      return;
    }
    if (!body.sessions.length) {
      tbody.replaceChildren(el("tr", null, el("td", { colspan: 5, class: "muted" }, "No sessions in this store.")));
      return;
    }
    tbody.replaceChildren(...body.sessions.map((s) => {
      const tr = el("tr", { tabindex: 0, "data-id": s.session_id },
        el("td", null, s.session_id),
        el("td", null, s.project_type ? `${s.project_name} (${s.project_type})` : s.project_name),
        el("td", { class: "col-when" }, whenIso(s.started_at)),
        el("td", { class: "col-status" }, s.active ? "active" : s.ended_at ? "ended" : "inactive"),
        el("td", { class: "col-took" }, String(s.commands)));
      tr.addEventListener("click", () => go("/session", { id: s.session_id }));
      return tr;
    }));
  }

  async function showSession(id, cmd) {
    const runBox = el("div", { id: "command-run" });
    const tbody = el("tbody", { id: "commands-body" });
    listKeys(tbody);
    main.replaceChildren(el("p", null, el("a", { href: "#/sessions" }, "← Sessions")), el("p", { class: "muted" }, "Loading…"));
    let s;
    try {
      s = await api("/api/session", { id });
    } catch (e) {
      main.replaceChildren(el("p", null, el("a", { href: "#/sessions" }, "← Sessions")), el("p", { class: "error-text" }, e.message));
      return;
    }
    const head = el("div", { class: "runhead" },
      el("span", null, "project ", el("b", null, s.project_name)),
      el("span", null, "started ", el("b", null, whenIso(s.started_at))),
      el("span", null, s.active ? "active" : s.ended_at ? `ended ${whenIso(s.ended_at)}` : "inactive"));
    tbody.replaceChildren(...s.commands.map((c) => {
      const secs = c.completed_at ? (Date.parse(c.completed_at) - Date.parse(c.started_at)) / 1000 : null;
      const tr = el("tr", { tabindex: 0, "data-id": String(c.id), class: String(c.id) === cmd ? "selected" : null },
        el("td", { class: "col-took" }, String(c.id)),
        el("td", null, c.command),
        el("td", { class: "col-status" }, statusEl(c.status)),
        el("td", { class: "col-when" }, whenIso(c.started_at)),
        el("td", { class: "col-took" }, took(secs)));
      tr.addEventListener("click", () => go("/session", { id, cmd: String(c.id) }));
      return tr;
    }));
    if (!s.commands.length) tbody.replaceChildren(el("tr", null, el("td", { colspan: 5, class: "muted" }, "No commands yet.")));
    const shared = Object.keys(s.shared_data || {}).length
      ? [el("h2", null, "Shared data"), el("pre", { class: "shared" }, json(s.shared_data))] : [];
    main.replaceChildren(
      el("p", null, el("a", { href: "#/sessions" }, "← Sessions")),
      el("h1", null, `Session ${s.session_id}`), head,
      el("h2", null, "Commands"),
      el("table", { class: "list", id: "commands" },
        el("thead", null, el("tr", null, el("th", { class: "col-took" }, "#"), el("th", null, "Command"),
          el("th", { class: "col-status" }, "Status"), el("th", { class: "col-when" }, "Started"),
          el("th", { class: "col-took" }, "Took"))),
        tbody),
      runBox, ...shared);
    const chosen = s.commands.find((c) => String(c.id) === cmd);
    if (chosen) runInto(runBox, chosen.run_id);
    else if (s.commands.length) runBox.append(el("p", { class: "muted" }, "Choose a command to see its tree."));
  }

  // -- routing ---------------------------------------------------------------------------

  function route() {
    for (const close of cleanups.splice(0)) close();
    const [path, q] = hashParams();
    document.getElementById("nav-runs").classList.toggle("on", path.startsWith("/run"));
    document.getElementById("nav-sessions").classList.toggle("on", path.startsWith("/session"));
    if (path === "/run") showRun(q.get("id"));
    else if (path === "/sessions") showSessions();
    else if (path === "/session") showSession(q.get("id"), q.get("cmd"));
    else showRuns(q);
  }

  // The token (off loopback) came in the address and is now a cookie: keep it out of the
  // address bar, the history and screenshots.
  if (new URLSearchParams(location.search).has("token")) {
    history.replaceState(null, "", location.pathname + location.hash);
  }
  api("/api/info").then((info) => {
    document.getElementById("store").textContent = `store ${info.store}`;
  }, () => {});
  window.addEventListener("hashchange", route);
  route();
})();
