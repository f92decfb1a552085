// The flame graph: one canvas, drawn from a tree of frames; its colours
// (by package); the sandwich of one function. Knows nothing of the URL.

import { $, dark, esc, fmtValue, pct } from "./util.js";

// The package a frame belongs to, for its colour: Rust `crate::…`,
// Go `path/pkg.Func`, Java `com.x.Y.m`, C `lib.so`.
export function packageOf(name) {
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

export function frameColor(name) {
  const pkg = packageOf(name);
  if (pkg === "total") return dark() ? "hsl(220 8% 38%)" : "hsl(220 10% 78%)";
  const h = hue(pkg);
  // Warm palette: hue folded into reds, oranges and yellows.
  const warm = 5 + (h % 55);
  return dark() ? `hsl(${warm} 62% ${38 + (h % 12)}%)` : `hsl(${warm} 78% ${68 + (h % 10)}%)`;
}


// A tree: {name, self, total, samples, children: [node]} built from the
// API's flat nodes (`samples` when the server counted them). Diff trees
// carry `base` and `new` too.
export function treeFrom(api) {
  const nodes = api.nodes.map((n) => ({ name: n.name, self: n.self, total: n.total, samples: n.samples, children: [] }));
  api.nodes.forEach((n, i) => { for (const c of n.children) nodes[i].children.push(nodes[c]); });
  return nodes[0];
}

export function countNodes(n) { let c = 1; for (const k of n.children) c += countNodes(k); return c; }

// One canvas flame graph. Layout is recomputed per zoom; drawing culls
// frames narrower than half a pixel (and their subtrees), so 100k nodes
// draw in a few milliseconds.
export class Flame {
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
export function sandwich(root, fn) {
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
