// The Models panel: one row per download (whatever started it), what a workflow lacks and why,
// and the cache's use against its budget. Plain DOM, styled with ComfyUI's own colours.

const STYLE = `
#cmcache-panel { position: fixed; left: 72px; bottom: 12px; z-index: 1000; width: 330px;
  max-height: 60vh; display: flex; flex-direction: column; font: 12px/1.4 sans-serif;
  color: var(--fg-color, #ddd); background: var(--comfy-menu-bg, #202020);
  border: 1px solid var(--border-color, #444); border-radius: 8px;
  box-shadow: 0 4px 16px rgba(0, 0, 0, .35); }
#cmcache-panel .cmcache-head { display: flex; align-items: center; gap: 8px; padding: 6px 10px;
  cursor: pointer; user-select: none; font-weight: 600; }
#cmcache-panel .cmcache-head .cmcache-count { font-weight: 400; opacity: .7; flex: 1; }
#cmcache-panel[data-collapsed="true"] .cmcache-body { display: none; }
#cmcache-panel .cmcache-body { overflow-y: auto; padding: 0 10px 8px; }
#cmcache-panel .cmcache-row { padding: 6px 0; border-top: 1px solid var(--border-color, #444); }
#cmcache-panel .cmcache-line { display: flex; gap: 8px; align-items: center; }
#cmcache-panel .cmcache-name { flex: 1; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }
#cmcache-panel .cmcache-muted { opacity: .7; }
#cmcache-panel .cmcache-spacer { flex: 1; }
#cmcache-panel .cmcache-bar { height: 6px; margin: 4px 0; border-radius: 3px;
  background: var(--comfy-input-bg, #333); overflow: hidden; }
#cmcache-panel .cmcache-bar > div { height: 100%; width: 0; background: #4a9eff;
  transition: width .3s; }
#cmcache-panel [data-state="placed"] .cmcache-bar > div { background: #3fb950; }
#cmcache-panel [data-state="failed"] .cmcache-bar > div,
#cmcache-panel [data-state="lost"] .cmcache-bar > div { background: #f85149; }
#cmcache-panel [data-state="paused"] .cmcache-bar > div { background: #888; }
#cmcache-panel button { font: inherit; padding: 1px 8px; cursor: pointer; border-radius: 4px;
  color: inherit; background: var(--comfy-input-bg, #333);
  border: 1px solid var(--border-color, #555); }
#cmcache-panel .cmcache-reason { color: #f0883e; white-space: normal; }
#cmcache-panel .cmcache-section { margin-top: 6px; padding-top: 6px; font-weight: 600;
  border-top: 1px solid var(--border-color, #444); }
#cmcache-panel .cmcache-missing-item { padding: 2px 0; }
#cmcache-panel .cmcache-cache { margin-top: 6px; padding-top: 6px;
  border-top: 1px solid var(--border-color, #444); }
#cmcache-notice { position: fixed; left: 72px; bottom: 12px; z-index: 1000; max-width: 360px;
  padding: 8px 12px; font: 12px/1.4 sans-serif; color: var(--fg-color, #ddd);
  background: var(--comfy-menu-bg, #202020); border: 1px solid #f0883e; border-radius: 8px; }
#cmcache-notice button { margin-left: 8px; cursor: pointer; }
`;

const KEEP_PLACED_MS = 8000;
const KEEP_FAILED_MS = 60000;

export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (v) => String(v).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class Panel {
  constructor(actions) {
    this.actions = actions; // { pause(id), resume(id), cancel(id) }
    this.rows = new Map(); // ref -> row element
    this.timers = new Map();
    this.root = null;
  }

  mount() {
    if (document.getElementById("cmcache-panel")) return;
    const style = el("style");
    style.id = "cmcache-style";
    style.textContent = STYLE;
    document.head.appendChild(style);
    const root = el("div");
    root.id = "cmcache-panel";
    root.dataset.collapsed = "true";
    const head = el("div", "cmcache-head");
    head.append(el("span", "cmcache-title", "Models"), el("span", "cmcache-count", ""));
    const toggle = el("button", "cmcache-toggle", "▴");
    toggle.title = "Show or hide";
    head.append(toggle);
    head.addEventListener("click", () => this.setCollapsed(root.dataset.collapsed !== "true"));
    const body = el("div", "cmcache-body");
    this.list = el("div", "cmcache-rows");
    this.missing = el("div", "cmcache-missing");
    this.cache = el("div", "cmcache-cache");
    body.append(this.list, this.missing, this.cache);
    root.append(head, body);
    document.body.appendChild(root);
    this.root = root;
    this.count = head.querySelector(".cmcache-count");
    this.toggle = toggle;
    this.refreshCount();
  }

  setCollapsed(collapsed) {
    this.root.dataset.collapsed = collapsed ? "true" : "false";
    this.toggle.textContent = collapsed ? "▴" : "▾";
  }

  refreshCount() {
    const running = [...this.rows.values()].filter((r) => !r.dataset.final).length;
    const missing = this.missing.querySelectorAll(".cmcache-missing-item").length;
    const parts = [];
    if (running) parts.push(`${running} downloading`);
    if (missing) parts.push(`${missing} unavailable`);
    this.count.textContent = parts.join(" · ");
  }

  // A snapshot of the queue (GET /cmcache/status, or a cmcache.progress message).
  apply(status) {
    if (status.cache) this.showCache(status.cache);
    const seen = new Set();
    for (const d of status.downloads || []) {
      seen.add(d.ref);
      this.update(d);
    }
    if (status.cache && status.downloads) {
      // A full snapshot: a running row it no longer holds has ended (its end follows).
      for (const [ref, row] of this.rows) {
        if (!seen.has(ref) && !row.dataset.final) this.finish({ ref, state: "ended" }, true);
      }
    }
    for (const e of status.ended || []) this.finish(e, false);
    this.refreshCount();
  }

  row(ref, name) {
    let row = this.rows.get(ref);
    if (row) return row;
    row = el("div", "cmcache-row");
    row.dataset.cmcacheRef = ref;
    const top = el("div", "cmcache-line");
    const title = el("span", "cmcache-name", name || ref);
    title.title = ref;
    top.append(title, el("span", "cmcache-pct", ""));
    const bar = el("div", "cmcache-bar");
    bar.append(el("div"));
    const bottom = el("div", "cmcache-line");
    const pause = el("button", "cmcache-pause", "Pause");
    const cancel = el("button", "cmcache-cancel", "Cancel");
    pause.addEventListener("click", () => {
      const id = row.dataset.id;
      if (!id) return;
      if (row.dataset.state === "paused") this.actions.resume(id);
      else this.actions.pause(id);
    });
    cancel.addEventListener("click", () => row.dataset.id && this.actions.cancel(row.dataset.id));
    bottom.append(
      el("span", "cmcache-speed cmcache-muted", ""),
      el("span", "cmcache-eta cmcache-muted", ""),
      el("span", "cmcache-spacer"),
      pause,
      cancel,
    );
    const reason = el("div", "cmcache-reason", "");
    row.append(top, bar, bottom, reason);
    this.list.append(row);
    this.rows.set(ref, row);
    if (this.root.dataset.opened !== "yes") {
      this.root.dataset.opened = "yes"; // open once by itself; the user decides after that
      this.setCollapsed(false);
    }
    return row;
  }

  update(d) {
    const row = this.row(d.ref, d.name);
    clearTimeout(this.timers.get(d.ref));
    delete row.dataset.final;
    row.dataset.id = d.id || "";
    row.dataset.state = d.state || "";
    const pct = d.total > 0 ? Math.min(100, Math.floor((100 * d.bytes) / d.total)) : null;
    row.querySelector(".cmcache-pct").textContent = pct === null ? d.state : `${pct}%`;
    row.querySelector(".cmcache-bar > div").style.width = `${pct || 0}%`;
    const moving = d.state === "active" && d.speed > 0;
    row.querySelector(".cmcache-speed").textContent = moving ? `${formatBytes(d.speed)}/s` : d.state;
    const eta = moving ? formatEta(d.eta) : "";
    row.querySelector(".cmcache-eta").textContent = eta ? `ETA ${eta}` : "";
    row.querySelector(".cmcache-pause").textContent = d.state === "paused" ? "Resume" : "Pause";
    row.querySelector(".cmcache-pause").hidden = false;
    row.querySelector(".cmcache-cancel").hidden = false;
    row.querySelector(".cmcache-reason").textContent = d.message || "";
  }

  finish(e, guessed) {
    const row = this.rows.get(e.ref);
    if (!row && e.state !== "failed") return; // nothing shown for it; nothing to end
    const shown = row || this.row(e.ref, e.name);
    if (guessed && shown.dataset.final) return;
    shown.dataset.final = "yes";
    shown.dataset.state = e.state;
    const label = {
      placed: "placed ✓", failed: "failed", cancelled: "cancelled", lost: "lost", ended: "ended",
    };
    shown.querySelector(".cmcache-pct").textContent = label[e.state] || e.state;
    if (e.state === "placed") shown.querySelector(".cmcache-bar > div").style.width = "100%";
    shown.querySelector(".cmcache-speed").textContent = "";
    shown.querySelector(".cmcache-eta").textContent = "";
    shown.querySelector(".cmcache-pause").hidden = true;
    shown.querySelector(".cmcache-cancel").hidden = true;
    shown.querySelector(".cmcache-reason").textContent = e.reason || "";
    clearTimeout(this.timers.get(e.ref));
    const keep = ["placed", "ended"].includes(e.state) ? KEEP_PLACED_MS : KEEP_FAILED_MS;
    this.timers.set(
      e.ref,
      setTimeout(() => {
        shown.remove();
        this.rows.delete(e.ref);
        this.refreshCount();
      }, e.state === "cancelled" ? 1500 : keep),
    );
  }

  showCache(cache) {
    this.cache.textContent = "";
    const used = cache.managed_bytes || 0;
    const budget = cache.budget;
    const line = el("div", "cmcache-line");
    line.append(
      el("span", "cmcache-name", "Cache"),
      el(
        "span",
        "cmcache-muted cmcache-cache-text",
        budget ? `${formatBytes(used)} of ${formatBytes(budget)}` : `${formatBytes(used)} (no budget)`,
      ),
    );
    const bar = el("div", "cmcache-bar");
    const fill = el("div");
    fill.style.width = budget ? `${Math.min(100, (100 * used) / budget)}%` : "0%";
    bar.append(fill);
    this.cache.append(line, bar);
  }

  // Models of the loaded workflow that nothing can supply, with why.
  showMissing(models) {
    this.missing.textContent = "";
    const lacking = models.filter((m) => m.state === "unknown" || m.state === "refused");
    if (lacking.length) {
      this.missing.append(el("div", "cmcache-section", "Not available"));
      for (const m of lacking) {
        const item = el("div", "cmcache-missing-item");
        item.dataset.cmcacheMissing = m.ref;
        item.append(el("div", "cmcache-name", m.filename), el("div", "cmcache-reason", m.reason));
        this.missing.append(item);
      }
      this.setCollapsed(false);
    }
    this.refreshCount();
  }
}

export function showNotice(text) {
  if (document.getElementById("cmcache-notice")) return; // one notice, however often asked
  const notice = el("div");
  notice.id = "cmcache-notice";
  notice.setAttribute("role", "status");
  notice.append(el("span", "", text));
  const close = el("button", "", "×");
  close.title = "Dismiss";
  close.addEventListener("click", () => {
    notice.style.display = "none";
  });
  notice.append(close);
  document.body.appendChild(notice);
}
