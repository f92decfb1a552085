// Kiln's web UI: one module, no build step. State lives in the URL, so a
// link is shareable and reloadable; every view reads the server's
// /api/v1/ endpoints (docs/api.md).

const $ = (s) => document.querySelector(s);
const api = async (path, params) => {
  const url = path + "?" + new URLSearchParams(params);
  const r = await fetch(url);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
};

// ---------------------------------------------------------------- state

const DEFAULTS = { query: "", from: "now-1h", until: "now", tab: "flame", search: "",
  focus: "", icicle: "", sandwich: "", groupBy: "", rquery: "", rfrom: "", runtil: "" };
const state = { ...DEFAULTS };

function readUrl() {
  const p = new URLSearchParams(location.search);
  for (const k of Object.keys(DEFAULTS)) state[k] = p.get(k) ?? DEFAULTS[k];
}

function writeUrl(push) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v && v !== DEFAULTS[k]) p.set(k, v);
  const url = location.pathname + (p.toString() ? "?" + p : "");
  if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
}

const typeOf = (q) => { const i = q.indexOf("{"); return i < 0 ? q : q.slice(0, i); };
const selectorOf = (q) => { const i = q.indexOf("{"); return i < 0 ? "{}" : q.slice(i); };

function status(msg, error) {
  const s = $("#status");
  s.textContent = msg || "";
  s.classList.toggle("error", !!error);
}

// ---------------------------------------------------------------- formatting

function fmtValue(v, unit) {
  if (unit === "nanoseconds") {
    const s = v / 1e9;
    if (s >= 3600) return (s / 3600).toFixed(1) + " h";
    if (s >= 60) return (s / 60).toFixed(1) + " min";
    if (s >= 1) return s.toFixed(2) + " s";
    return (v / 1e6).toFixed(1) + " ms";
  }
  if (unit === "bytes") {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0; let x = v;
    while (Math.abs(x) >= 1024 && i < u.length - 1) { x /= 1024; i++; }
    return x.toFixed(i ? 1 : 0) + " " + u[i];
  }
  return v.toLocaleString("en-US");
}
const pct = (v, t) => (t ? (100 * v / t) : 0).toFixed(2) + "%";
const esc = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

// The package a frame belongs to, for its colour: Rust `crate::…`,
// Go `path/pkg.Func`, Java `com.x.Y.m`, C `lib.so`.
function packageOf(name) {
  let n = name.replace(/^<|>$/g, "");
  if (n.startsWith("[") || n === "total" || n === "other") return n;
  const rust = n.indexOf("::");
  if (rust > 0) return n.slice(0, rust).replace(/^<|&/g, "");
  const slash = n.lastIndexOf("/");
  const afterSlash = n.slice(slash + 1);
  const dot = afterSlash.indexOf(".");
  if (slash >= 0) return n.slice(0, slash + 1 + (dot > 0 ? dot : afterSlash.length));
  const parts = n.split(".");
  if (parts.length > 2) return parts.slice(0, -2).join(".");
  return parts[0];
}

function hue(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
  return (h >>> 0) % 360;
}

const dark = () => document.documentElement.dataset.theme !== "light";
function frameColor(name) {
  const pkg = packageOf(name);
  if (pkg === "total") return dark() ? "hsl(220 8% 38%)" : "hsl(220 10% 78%)";
  const h = hue(pkg);
  // Warm palette: hue folded into reds, oranges and yellows.
  const warm = 5 + (h % 55);
  return dark() ? `hsl(${warm} 62% ${38 + (h % 12)}%)` : `hsl(${warm} 78% ${68 + (h % 10)}%)`;
}

// ---------------------------------------------------------------- flame graph

// A tree: {name, self, total, samples, children: [node]} built from the
// API's flat nodes (`samples` when the server counted them). Diff trees
// carry `base` and `new` too.
function treeFrom(api) {
  const nodes = api.nodes.map((n) => ({ name: n.name, self: n.self, total: n.total, samples: n.samples, children: [] }));
  api.nodes.forEach((n, i) => { for (const c of n.children) nodes[i].children.push(nodes[c]); });
  return nodes[0];
}

function countNodes(n) { let c = 1; for (const k of n.children) c += countNodes(k); return c; }

// One canvas flame graph. Layout is recomputed per zoom; drawing culls
// frames narrower than half a pixel (and their subtrees), so 100k nodes
// draw in a few milliseconds.
class Flame {
  constructor(canvas, opts = {}) {
    this.canvas = canvas;
    this.opts = opts;
    this.rowH = 18;
    this.root = null;
    this.zoom = [];
    this.rects = [];
    this.search = "";
    canvas.addEventListener("click", (e) => this.onClick(e));
    canvas.addEventListener("mousemove", (e) => this.onMove(e));
    canvas.addEventListener("mouseleave", () => this.tip(null));
    new ResizeObserver(() => this.draw()).observe(canvas.parentElement);
  }

  set(root, unit) {
    this.root = root; this.unit = unit; this.zoom = [root];
    this.canvas.dataset.nodes = root ? countNodes(root) : 0;
    this.canvas.dataset.total = root ? root.total : 0;
  }

  focusPath(path) {
    // path: frame names from the root's child down, joined by ';'.
    this.zoom = [this.root];
    if (!path || !this.root) return;
    for (const name of path.split(";")) {
      const cur = this.zoom[this.zoom.length - 1];
      const next = cur.children.find((c) => c.name === name);
      if (!next) break;
      this.zoom.push(next);
    }
  }

  path() { return this.zoom.slice(1).map((n) => n.name).join(";"); }

  draw() {
    const c = this.canvas;
    const w = c.parentElement.clientWidth;
    if (!this.root || !w) return;
    const t0 = performance.now();
    const depth = this.maxDepth(this.root, 0);
    const h = Math.max(60, (depth + 1) * this.rowH + 4);
    const dpr = window.devicePixelRatio || 1;
    c.width = w * dpr; c.height = h * dpr;
    c.style.height = h + "px";
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "12px ui-monospace, Menlo, monospace";
    g.textBaseline = "middle";
    this.rects = [];
    this.matchTotal = 0;
    this.matchCount = 0;
    const focus = this.zoom[this.zoom.length - 1];
    const icicle = this.opts.icicle ? this.opts.icicle() : false;
    const y = (d) => (icicle ? d * this.rowH : h - (d + 1) * this.rowH);
    const re = this.search ? this.matcher(this.search) : null;
    // The focus chain above the zoomed frame, full width.
    this.zoom.forEach((n, d) => this.rect(g, n, 0, w, y(d), re, d, true));
    const base = this.zoom.length - 1;
    const walk = (n, x, width, d, matchedAbove) => {
      const scale = width / Math.max(n.total, 1);
      let cx = x;
      for (const k of n.children) {
        const kw = k.total * scale;
        if (kw >= 0.5) {
          const matched = this.rect(g, k, cx, kw, y(d), re, d, false, matchedAbove);
          walk(k, cx, kw, d + 1, matchedAbove || matched);
        } else if (re) {
          this.countMatches(k, re, matchedAbove);
        }
        cx += kw;
      }
    };
    walk(focus, 0, w, base + 1, re ? re.test(focus.name) : false);
    if (re && re.test(focus.name)) { this.matchTotal = focus.total; }
    c.dataset.drawn = this.rects.length;
    // When the first graph reaches the screen: the next frame after it
    // is drawn (bench/ui.sh reads this).
    if (!c.dataset.firstPaint) requestAnimationFrame(() => { c.dataset.firstPaint = performance.now().toFixed(0); });
    c.dataset.zoom = this.path();
    c.dataset.drawMs = (performance.now() - t0).toFixed(1);
    if (this.opts.onDraw) this.opts.onDraw(this);
  }

  matcher(s) {
    try { return new RegExp(s, "i"); } catch { return new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i"); }
  }

  // Matches below a frame too narrow to draw still count.
  countMatches(n, re, above) {
    const m = re.test(n.name);
    if (m) { this.matchCount++; if (!above) this.matchTotal += n.total; }
    for (const k of n.children) this.countMatches(k, re, above || m);
  }

  rect(g, n, x, w, y, re, depth, chain, matchedAbove) {
    const matched = re ? re.test(n.name) : false;
    if (matched && !chain) { this.matchCount++; if (!matchedAbove) this.matchTotal += n.total; }
    let fill = this.opts.color ? this.opts.color(n) : frameColor(n.name);
    if (re && !matched) fill = dark() ? "hsl(220 6% 26%)" : "hsl(220 8% 86%)";
    if (matched) fill = getComputedStyle(document.documentElement).getPropertyValue("--match");
    g.fillStyle = fill;
    g.globalAlpha = chain && depth < this.zoom.length - 1 ? 0.55 : 1;
    g.fillRect(x + 0.5, y + 0.5, Math.max(w - 1, 0.5), this.rowH - 1);
    g.globalAlpha = 1;
    if (w > 28) {
      g.fillStyle = dark() ? "#f4f4f4" : "#111";
      const label = this.fit(g, n.name, w - 8);
      if (label) g.fillText(label, x + 4, y + this.rowH / 2);
    }
    this.rects.push({ n, x, y, w, depth, chain });
    return matched;
  }

  fit(g, s, w) {
    if (g.measureText(s).width <= w) return s;
    const cw = g.measureText("m").width;
    const n = Math.floor(w / cw) - 1;
    return n < 3 ? "" : s.slice(0, n) + "…";
  }

  maxDepth(n, d) {
    // Deepest visible level from the zoomed frame.
    const focus = this.zoom[this.zoom.length - 1];
    const visit = (m, dd, width) => {
      let best = dd;
      for (const k of m.children) {
        const kw = width * k.total / Math.max(m.total, 1);
        if (kw >= 0.5) best = Math.max(best, visit(k, dd + 1, kw));
      }
      return best;
    };
    return this.zoom.length - 1 + visit(focus, 0, this.canvas.parentElement.clientWidth || 1000);
  }

  hit(x, y) {
    for (let i = this.rects.length - 1; i >= 0; i--) {
      const r = this.rects[i];
      if (x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + this.rowH) return r;
    }
    return null;
  }

  // Where a frame named `name` is drawn (the widest one), in page
  // coordinates: for tests and for focusing from the top table.
  rectOf(name) {
    const all = this.rects.filter((r) => r.n.name === name);
    if (!all.length) return null;
    const r = all.reduce((a, b) => (b.w > a.w ? b : a));
    const b = this.canvas.getBoundingClientRect();
    return { x: b.left + r.x + r.w / 2, y: b.top + r.y + this.rowH / 2, w: r.w };
  }

  onClick(e) {
    const b = this.canvas.getBoundingClientRect();
    const r = this.hit(e.clientX - b.left, e.clientY - b.top);
    if (!r) return;
    if (r.chain) this.zoom = this.zoom.slice(0, r.depth + 1);
    else {
      // The chain from the root to the clicked frame.
      const chain = this.chainTo(r.n);
      if (chain) this.zoom = chain;
    }
    if (this.opts.onZoom) this.opts.onZoom(this);
    this.draw();
  }

  chainTo(target) {
    const path = [];
    const find = (n) => {
      path.push(n);
      if (n === target) return true;
      for (const k of n.children) if (find(k)) return true;
      path.pop();
      return false;
    };
    return find(this.root) ? path : null;
  }

  onMove(e) {
    const b = this.canvas.getBoundingClientRect();
    const r = this.hit(e.clientX - b.left, e.clientY - b.top);
    this.tip(r, e);
  }

  tip(r, e) {
    const t = $("#tip");
    if (!r) { t.hidden = true; return; }
    const n = r.n;
    const total = this.root.total;
    let html = `<b>${esc(n.name)}</b><br>`;
    if (n.base !== undefined) {
      html += `base ${fmtValue(n.base, this.unit)} (${pct(n.base, this.opts.baseTotal())}) → new ${fmtValue(n.new, this.unit)} (${pct(n.new, this.opts.newTotal())})`;
    } else {
      html += `total ${fmtValue(n.total, this.unit)} (${pct(n.total, total)})<br>self ${fmtValue(n.self, this.unit)} (${pct(n.self, total)})`;
      if (n.samples !== undefined) html += `<br>${n.samples.toLocaleString("en-US")} samples`;
    }
    html += `<br><span class="hint">package ${esc(packageOf(n.name))} · click to zoom</span>`;
    t.innerHTML = html;
    t.hidden = false;
    t.style.left = Math.min(e.clientX + 14, innerWidth - 540) + "px";
    t.style.top = e.clientY + 14 + "px";
  }
}

// Sandwich: callers of `fn` above (inverted), callees below, each merged
// over every place it is called from. Recursion counts once (outermost).
function sandwich(root, fn) {
  const callees = { name: fn, self: 0, total: 0, children: [] };
  const callers = { name: fn, self: 0, total: 0, children: [] };
  const addSamples = (dst, k) => { if (k !== undefined) dst.samples = (dst.samples || 0) + k; };
  const mergeInto = (dst, src) => {
    dst.total += src.total; dst.self += src.self; addSamples(dst, src.samples);
    for (const k of src.children) {
      let d = dst.children.find((c) => c.name === k.name);
      if (!d) { d = { name: k.name, self: 0, total: 0, children: [] }; dst.children.push(d); }
      mergeInto(d, k);
    }
  };
  const stack = [];
  const visit = (n, inside) => {
    const here = n.name === fn;
    if (here && !inside) {
      mergeInto(callees, n);
      // Callers: the path above, innermost first.
      let at = callers;
      for (let i = stack.length - 1; i >= 1; i--) {
        let d = at.children.find((c) => c.name === stack[i].name);
        if (!d) { d = { name: stack[i].name, self: 0, total: 0, children: [] }; at.children.push(d); }
        d.total += n.total; addSamples(d, n.samples);
        at = d;
      }
      callers.total += n.total; addSamples(callers, n.samples);
    }
    stack.push(n);
    for (const k of n.children) visit(k, inside || here);
    stack.pop();
  };
  visit(root, false);
  const sort = (n) => { n.children.sort((a, b) => b.total - a.total); n.children.forEach(sort); };
  sort(callees); sort(callers);
  callees.self = callees.total - callees.children.reduce((a, c) => a + c.total, 0);
  return { callers, callees };
}

// ---------------------------------------------------------------- exports

function folded(root) {
  const out = [];
  const walk = (n, path) => {
    const p = n === root ? path : path.concat(n.name);
    if (n.self > 0 && p.length) out.push(p.join(";") + " " + n.self);
    for (const k of n.children) walk(k, p);
  };
  walk(root, []);
  return out.join("\n") + "\n";
}

function svg(flame) {
  const w = flame.canvas.parentElement.clientWidth;
  const h = parseFloat(flame.canvas.style.height);
  const parts = flame.rects.map((r) => {
    const label = r.w > 28 ? `<text x="${(r.x + 4).toFixed(1)}" y="${(r.y + 13).toFixed(1)}">${esc(r.n.name.slice(0, Math.floor(r.w / 7)))}</text>` : "";
    return `<g><title>${esc(r.n.name)} (${r.n.total})</title><rect x="${r.x.toFixed(1)}" y="${r.y}" width="${Math.max(r.w - 1, 0.5).toFixed(1)}" height="${flame.rowH - 1}" fill="${frameColor(r.n.name)}"/>${label}</g>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="monospace" font-size="11">${parts.join("")}</svg>`;
}

function download(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---------------------------------------------------------------- timeline

const PALETTE = ["#ff8a3d", "#4ea8de", "#8bd17c", "#d33aff", "#f2c14e", "#e5484d", "#30a46c", "#9aa3ad"];

function drawTimeline(data, from, until) {
  const c = $("#timeline");
  const w = c.getBoundingClientRect().width;
  const h = 90;
  const dpr = window.devicePixelRatio || 1;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  // Minutes without data are zero, not a line drawn across the gap.
  const step = data.step_ms || 60000;
  const first = Math.floor(from / step) * step;
  const lines = (data.lines || []).map((l) => {
    const at = new Map(l.points.map(([t, v]) => [t, v]));
    const points = [];
    if ((until - first) / step <= 20000) {
      for (let t = first; t < until; t += step) points.push([t, at.get(t) || 0]);
    } else points.push(...l.points);
    return { group: l.group, points, real: l.points.length };
  });
  let max = 1;
  for (const l of lines) for (const [, v] of l.points) max = Math.max(max, v);
  const x = (t) => ((t - from) / (until - from)) * w;
  const y = (v) => h - 4 - (v / max) * (h - 12);
  g.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--line");
  g.beginPath(); g.moveTo(0, h - 4); g.lineTo(w, h - 4); g.stroke();
  lines.forEach((l, i) => {
    g.strokeStyle = PALETTE[i % PALETTE.length];
    g.lineWidth = 1.5;
    g.beginPath();
    l.points.forEach(([t, v], j) => (j ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    g.stroke();
  });
  c.dataset.lines = lines.length;
  c.dataset.points = lines.reduce((a, l) => a + l.real, 0);
  $("#legend").innerHTML = lines.length > 1
    ? lines.map((l, i) => `<span><i style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(l.group || "(none)")}</span>`).join("")
    : "";
  timelineRange = { from, until, w };
}

let timelineRange = null;
function wireTimelineDrag() {
  const c = $("#timeline");
  let start = null;
  c.addEventListener("mousedown", (e) => { start = e.offsetX; });
  c.addEventListener("mouseup", (e) => {
    if (start === null || !timelineRange) return;
    const a = Math.min(start, e.offsetX), b = Math.max(start, e.offsetX);
    start = null;
    if (b - a < 4) return;
    const { from, until, w } = timelineRange;
    const t = (px) => Math.round(from + (px / w) * (until - from));
    state.from = String(t(a)); state.until = String(t(b));
    writeUrl(true); syncForm(); load();
  });
}

// ---------------------------------------------------------------- views

let flame, diffFlame, topRows = [], topMeta = {}, sort = { key: "self", dir: -1 }, lastTree = null;
let diffData = null;

function parseTime(s, now) {
  s = (s || "").trim();
  if (!s || s === "now") return now;
  const m = s.match(/^now-(\d+)(ms|s|m|h|d|w)$/);
  if (m) return now - Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[2]];
  if (/^\d+$/.test(s)) { const n = Number(s); return n < 1e11 ? n * 1000 : n; }
  const d = Date.parse(s);
  return isNaN(d) ? now : d;
}
// Absolute dates typed in the form go to the server as milliseconds.
const toServerTime = (s) => (/^(now|now-\d+(ms|s|m|h|d|w)|\d+)$/.test((s || "").trim()) ? s.trim() : String(parseTime(s, Date.now())));

function range() { return { from: toServerTime(state.from), until: toServerTime(state.until) }; }

async function loadFlame() {
  const r = range();
  const params = { query: state.query, ...r, maxNodes: "100000", samples: "true" };
  performance.mark("kiln-fetch");
  const [tree, top] = await Promise.all([
    api("/api/v1/flamegraph", params),
    // The 5,000 heaviest functions: the table shows 2,000 at a time, and
    // the rest would weigh megabytes for rows of a few samples.
    api("/api/v1/top", { query: state.query, ...r, n: "5000" }),
  ]);
  performance.mark("kiln-data");
  lastTree = treeFrom(tree);
  topRows = top.rows; topMeta = top;
  $("#export-pprof").href = "/api/v1/pprof?" + new URLSearchParams({ query: state.query, ...r });
  showFlame();
  performance.mark("kiln-drawn");
  // The graph first; the table on the next frame.
  await new Promise((done) => requestAnimationFrame(() => { renderTop(); done(); }));
}

function showFlame() {
  if (!lastTree) return;
  const head = $("#sandwich-head");
  if (state.sandwich) {
    const { callers, callees } = sandwich(lastTree, state.sandwich);
    // Callers drawn as an icicle above the function, callees below.
    const merged = { name: "total", self: 0, total: callers.total, children: [] };
    const up = { ...callers, name: "▲ callers of " + state.sandwich };
    const down = { ...callees, name: "▼ " + state.sandwich + " calls" };
    merged.children = [up, down].filter((n) => n.total > 0);
    merged.total = merged.children.reduce((a, n) => a + n.total, 0);
    flame.set(merged, topMeta.unit);
    head.hidden = false;
    head.querySelector("span").textContent = `Sandwich of ${state.sandwich}: callers above, callees below`;
    $("#flame").dataset.sandwich = state.sandwich;
  } else {
    flame.set(lastTree, topMeta.unit);
    flame.focusPath(state.focus);
    head.hidden = true;
    delete $("#flame").dataset.sandwich;
  }
  flame.search = state.search;
  flame.draw();
}

function renderTop() {
  const f = $("#filter").value.toLowerCase();
  const total = topMeta.total || 0;
  const rows = topRows
    .map((r) => ({ ...r, pct: total ? r.self / total : 0 }))
    .filter((r) => !f || r.name.toLowerCase().includes(f));
  const { key, dir } = sort;
  rows.sort((a, b) => (key === "name" ? a.name.localeCompare(b.name) : a[key] - b[key]) * dir);
  // The Pareto cut: the last row inside the 80% set, in self order.
  const lastPareto = sort.key === "self" && sort.dir === -1 ? rows.filter((r) => r.pareto).length - 1 : -1;
  const max = rows.reduce((a, r) => Math.max(a, r.self), 1);
  const tb = $("#top tbody");
  tb.innerHTML = rows.slice(0, 2000).map((r, i) =>
    `<tr data-name="${esc(r.name)}" data-self="${r.self}" data-total="${r.total}" data-pareto="${r.pareto}"${i === lastPareto ? ' class="pareto-cut"' : ""}>` +
    `<td>${esc(r.name)}</td><td class="num">${fmtValue(r.self, topMeta.unit)}</td>` +
    `<td class="num">${fmtValue(r.total, topMeta.unit)}</td>` +
    `<td class="num">${(r.pct * 100).toFixed(2)}%<span class="bar" style="width:${(40 * r.self / max).toFixed(0)}px"></span></td></tr>`).join("");
  $("#top").dataset.rows = rows.length;
}

async function loadTimeline() {
  const r = range();
  const now = Date.now();
  const data = await api("/api/v1/timeline", { query: state.query, ...r, ...(state.groupBy ? { groupBy: state.groupBy } : {}) });
  drawTimeline(data, parseTime(state.from, now), parseTime(state.until, now));
}

async function loadThreads() {
  const t = await api("/api/v1/threads", { query: state.query, ...range() });
  const row = (r) => `<tr data-name="${esc(r.name)}" data-cores="${r.cores ?? ""}"${(r.cores ?? 0) >= 0.8 ? ' class="hot" title="near a full core: a bottleneck"' : ""}>` +
    `<td>${esc(r.name || "(unnamed)")}</td><td class="num">${(100 * r.share).toFixed(1)}%</td><td class="num">${r.cores !== undefined ? r.cores.toFixed(2) : "—"}</td></tr>`;
  $("#pools tbody").innerHTML = t.pools.map(row).join("");
  $("#threads tbody").innerHTML = t.threads.map(row).join("");
  $("#threads").dataset.rows = t.threads.length;
}

async function loadCompare() {
  const base = range();
  const rq = state.rquery ? typeOf(state.query) + state.rquery : state.query;
  const params = {
    leftQuery: state.query, leftFrom: base.from, leftUntil: base.until,
    rightQuery: rq, rightFrom: toServerTime(state.rfrom || state.from), rightUntil: toServerTime(state.runtil || state.until),
  };
  diffData = await api("/api/v1/diff", params);
  // The diff tree from per-stack values.
  const root = { name: "total", self: 0, total: 0, base: 0, new: 0, children: [] };
  for (const s of diffData.stacks) {
    let at = root;
    at.base += s.base; at.new += s.new;
    for (const name of s.stack.split(";")) {
      let k = at.children.find((c) => c.name === name);
      if (!k) { k = { name, self: 0, total: 0, base: 0, new: 0, children: [] }; at.children.push(k); }
      k.base += s.base; k.new += s.new;
      at = k;
    }
  }
  // Width by the larger normalised share, so shrunk frames still show.
  const bt = diffData.base_total || 1, nt = diffData.new_total || 1;
  const size = (n) => { n.total = Math.round(1e9 * Math.max(n.base / bt, n.new / nt)); n.children.forEach(size); n.children.sort((a, b) => b.total - a.total); };
  size(root);
  diffFlame.set(root, diffData.unit);
  diffFlame.draw();
  $("#diff").dataset.stacks = diffData.stacks.length;
  $("#movers tbody").innerHTML = diffData.functions.slice(0, 200).map((r) => {
    const cls = r.self_delta_pct > 0 ? "grew" : r.self_delta_pct < 0 ? "shrank" : "";
    return `<tr data-name="${esc(r.name)}" data-delta="${r.self_delta_pct}" class="${cls}"><td>${esc(r.name)}</td>` +
      `<td class="num">${pct(r.base_self, bt)}</td><td class="num">${pct(r.new_self, nt)}</td>` +
      `<td class="num ${cls}">${r.self_delta_pct > 0 ? "+" : ""}${r.self_delta_pct.toFixed(2)}</td></tr>`;
  }).join("");
  $("#movers").dataset.rows = diffData.functions.length;
}

function diffColor(n) {
  const bt = diffData.base_total || 1, nt = diffData.new_total || 1;
  const d = n.new / nt - n.base / bt;
  const m = Math.min(1, Math.abs(d) * 20);
  if (Math.abs(d) < 1e-4) return dark() ? "hsl(220 6% 40%)" : "hsl(220 8% 80%)";
  const light = dark() ? 30 + 22 * (1 - m) : 55 + 30 * (1 - m);
  return d > 0 ? `hsl(0 70% ${light}%)` : `hsl(140 55% ${light}%)`;
}

// ---------------------------------------------------------------- wiring

async function loadTypes() {
  const types = await api("/api/v1/profile-types", {});
  const sel = $("#type");
  sel.innerHTML = types.map((t) => `<option>${esc(t)}</option>`).join("");
  if (!state.query && types.length) {
    const cpu = types.find((t) => t.startsWith("process_cpu:cpu:")) || types[0];
    state.query = cpu + "{}";
    writeUrl(false);
  }
}

async function loadCompletions() {
  const names = await api("/api/v1/labels", {});
  const opts = [];
  const g = $("#group-by");
  g.innerHTML = `<option value="">—</option>` + names.filter((n) => n !== "__name__").map((n) => `<option${n === state.groupBy ? " selected" : ""}>${esc(n)}</option>`).join("");
  for (const n of names.filter((n) => n !== "__name__").slice(0, 20)) {
    const values = await api("/api/v1/label-values", { name: n });
    for (const v of values.slice(0, 50)) opts.push(`{${n}="${v}"}`);
  }
  $("#completions").innerHTML = opts.map((o) => `<option value="${esc(o)}">`).join("");
}

function syncForm() {
  const t = typeOf(state.query);
  if (t && ![...$("#type").options].some((o) => o.value === t)) $("#type").insertAdjacentHTML("beforeend", `<option>${esc(t)}</option>`);
  $("#type").value = t;
  $("#selector").value = selectorOf(state.query);
  const preset = [...$("#preset").options].find((o) => o.value === state.from && state.until === "now");
  $("#preset").value = preset ? preset.value : "custom";
  $("#from").value = state.from; $("#until").value = state.until;
  $("#search").value = state.search;
  $("#icicle").checked = state.icicle === "1";
  $("#r-selector").value = state.rquery; $("#r-from").value = state.rfrom; $("#r-until").value = state.runtil;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === state.tab);
  $("#flame-tab").hidden = state.tab !== "flame";
  $("#compare-tab").hidden = state.tab !== "compare";
  $("#threads-tab").hidden = state.tab !== "threads";
}

let loading = 0;
async function load() {
  if (!state.query) { status("no profiles yet: push some (see README)"); return; }
  const mine = ++loading;
  status("loading…");
  document.body.dataset.ready = "0";
  try {
    const work = [loadTimeline()];
    if (state.tab === "flame") work.push(loadFlame());
    if (state.tab === "threads") work.push(loadThreads());
    if (state.tab === "compare") work.push(loadCompare());
    await Promise.all(work);
    if (mine === loading) status("");
  } catch (e) {
    if (mine === loading) status(e.message, true);
  } finally {
    if (mine === loading) document.body.dataset.ready = "1";
  }
}

function updateMatches(f) {
  const m = $("#matches");
  if (!f.search) { m.textContent = ""; delete f.canvas.dataset.matches; return; }
  const share = f.root ? f.matchTotal / Math.max(f.root.total, 1) : 0;
  m.textContent = `${f.matchCount} match${f.matchCount === 1 ? "" : "es"} · ${(100 * share).toFixed(2)}% of total`;
  f.canvas.dataset.matches = f.matchCount;
  f.canvas.dataset.matchShare = share.toFixed(4);
}

function init() {
  readUrl();
  flame = new Flame($("#flame"), {
    icicle: () => state.icicle === "1",
    onZoom: (f) => { if (!state.sandwich) { state.focus = f.path(); writeUrl(true); } renderCrumbs(); },
    onDraw: (f) => { updateMatches(f); renderCrumbs(); },
  });
  diffFlame = new Flame($("#diff"), {
    color: diffColor,
    baseTotal: () => diffData.base_total, newTotal: () => diffData.new_total,
  });
  wireTimelineDrag();

  $("#bar").addEventListener("submit", (e) => {
    e.preventDefault();
    state.query = $("#type").value + ($("#selector").value.trim() || "{}");
    if ($("#preset").value !== "custom") { state.from = $("#preset").value; state.until = "now"; }
    else { state.from = $("#from").value || "now-1h"; state.until = $("#until").value || "now"; }
    state.focus = ""; state.sandwich = "";
    writeUrl(true); syncForm(); load();
  });
  $("#preset").addEventListener("change", () => { if ($("#preset").value !== "custom") $("#bar").requestSubmit(); });
  $("#type").addEventListener("change", () => $("#bar").requestSubmit());
  $("#group-by").addEventListener("change", () => { state.groupBy = $("#group-by").value; writeUrl(false); loadTimeline().catch((e) => status(e.message, true)); });
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => { state.tab = b.dataset.tab; writeUrl(true); syncForm(); load(); });
  }
  let searchTimer;
  $("#search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.search = $("#search").value; writeUrl(false); flame.search = state.search; flame.draw(); }, 120);
  });
  $("#icicle").addEventListener("change", () => { state.icicle = $("#icicle").checked ? "1" : ""; writeUrl(false); flame.draw(); diffFlame.draw(); });
  $("#reset").addEventListener("click", resetView);
  $("#sandwich-close").addEventListener("click", () => { state.sandwich = ""; writeUrl(true); showFlame(); });
  $("#filter").addEventListener("input", renderTop);
  for (const th of document.querySelectorAll("#top th")) {
    th.addEventListener("click", () => {
      const k = th.dataset.sort;
      sort = { key: k, dir: sort.key === k ? -sort.dir : (k === "name" ? 1 : -1) };
      renderTop();
    });
  }
  $("#top tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr"); if (!tr) return;
    // Focus: search for the function exactly; it lights up in the graph.
    for (const r of document.querySelectorAll("#top tr.focused")) r.classList.remove("focused");
    tr.classList.add("focused");
    state.search = "^" + tr.dataset.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$";
    $("#search").value = state.search;
    writeUrl(false);
    flame.search = state.search; flame.draw();
  });
  $("#top tbody").addEventListener("dblclick", (e) => {
    const tr = e.target.closest("tr"); if (!tr) return;
    state.sandwich = tr.dataset.name; state.search = ""; $("#search").value = "";
    writeUrl(true); showFlame();
  });
  $("#compare-run").addEventListener("click", () => {
    state.rquery = $("#r-selector").value.trim(); state.rfrom = $("#r-from").value.trim(); state.runtil = $("#r-until").value.trim();
    writeUrl(true); loadCompare().catch((e) => status(e.message, true));
  });
  $("#export-folded").addEventListener("click", (e) => { e.preventDefault(); if (flame.root) download("profile.folded", folded(flame.root), "text/plain"); });
  $("#export-svg").addEventListener("click", (e) => { e.preventDefault(); if (flame.root) download("flamegraph.svg", svg(flame), "image/svg+xml"); });
  $("#theme").addEventListener("click", toggleTheme);
  document.addEventListener("keydown", (e) => {
    const typing = /INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName);
    if (e.key === "/" && !typing) { e.preventDefault(); $("#search").focus(); }
    else if (e.key === "Escape") { if (typing) document.activeElement.blur(); resetView(); }
    else if (e.key === "t" && !typing) toggleTheme();
  });
  addEventListener("popstate", () => { readUrl(); syncForm(); load(); });

  // A shared link names its query: draw it at once, and fill the type
  // list beside it.
  if (state.query) { syncForm(); load(); }
  loadTypes()
    .then(() => { syncForm(); if (!loading) return load(); })
    .catch((e) => status(e.message, true));
  loadCompletions().catch(() => {});
}

function resetView() {
  state.focus = ""; state.search = ""; state.sandwich = "";
  $("#search").value = "";
  writeUrl(true); showFlame();
}

function toggleTheme() {
  const t = dark() ? "light" : "dark";
  document.documentElement.dataset.theme = t;
  localStorage.setItem("kiln-theme", t);
  flame.draw(); diffFlame.draw();
  if (state.query) loadTimeline().catch(() => {});
}

function renderCrumbs() {
  const c = $("#crumbs");
  if (!flame.root || flame.zoom.length <= 1) { c.innerHTML = ""; return; }
  c.innerHTML = flame.zoom.map((n, i) => `<a data-depth="${i}">${esc(i ? n.name : "all")}</a>`).join(" › ");
  for (const a of c.querySelectorAll("a")) {
    a.addEventListener("click", () => {
      flame.zoom = flame.zoom.slice(0, Number(a.dataset.depth) + 1);
      if (!state.sandwich) { state.focus = flame.path(); writeUrl(true); }
      flame.draw();
    });
  }
}

// For tests and the curious: where frames are drawn, what is hit.
window.kiln = {
  state,
  rectOf: (name) => flame.rectOf(name),
  diffRectOf: (name) => diffFlame.rectOf(name),
  hit: (x, y) => { const b = flame.canvas.getBoundingClientRect(); const r = flame.hit(x - b.left, y - b.top); return r && r.n.name; },
};

init();
