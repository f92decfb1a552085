// The Tasks view: one row per task of the selection (from
// /api/v1/tasks) with its rate, p50/p99/p999, a bar of where its time
// went (CPU | each I/O kind | other waiting), stuck count and top sites;
// against a comparison range, each percentile's change. The chosen
// task's latency over time is drawn as p50 and p99 lines.

import { esc } from "./util.js";

// Colours of the split bar: CPU, I/O kinds in turn, other waiting.
export const CPU_COLOR = "#ff8a3d";
const IO_COLORS = ["#4ea8de", "#8bd17c", "#d33aff", "#f2c14e", "#30a46c"];
export const OTHER_COLOR = "#9aa3ad";

export function dur(ns) {
  if (!ns) return "0";
  if (ns < 1e3) return ns.toFixed(0) + " ns";
  if (ns < 1e6) return (ns / 1e3).toFixed(1) + " µs";
  if (ns < 1e9) return (ns / 1e6).toFixed(2) + " ms";
  return (ns / 1e9).toFixed(2) + " s";
}

// One colour per I/O kind, the same in every row.
function kindColors(rows) {
  const kinds = [...new Set(rows.flatMap((r) => Object.keys(r.io_ns || {})))].sort();
  return new Map(kinds.map((k, i) => [k, IO_COLORS[i % IO_COLORS.length]]));
}

function bar(r, colors) {
  const total = Math.max(1, r.latency_sum_ns);
  const parts = [["CPU", r.cpu_ns, CPU_COLOR], ...Object.entries(r.io_ns || {}).map(([k, v]) => [k, v, colors.get(k)]), ["other", r.other_ns, OTHER_COLOR]];
  const title = parts.map(([k, v]) => `${k} ${(100 * v / total).toFixed(0)}%`).join(" | ");
  return `<div class="split" title="${esc(title)}">` + parts.map(([k, v, c]) =>
    `<i data-part="${esc(k)}" style="width:${(100 * v / total).toFixed(2)}%;background:${c}"></i>`).join("") + `</div>`;
}

function change(now, then) {
  if (!then) return "";
  const d = 100 * (now - then) / then;
  const cls = d > 10 ? "grew" : d < -10 ? "shrank" : "";
  return ` <span class="delta ${cls}">${d > 0 ? "+" : ""}${d.toFixed(0)}%</span>`;
}

// The table body; `other` is the comparison range's answer, or null.
export function tasksHtml(data, other) {
  const rows = data.tasks || [];
  if (!rows.length) return `<tr><td colspan="9">No tasks in this range: services record them with kiln_agent::task or its tracing layer.</td></tr>`;
  const colors = kindColors(rows);
  const then = new Map((other?.tasks || []).map((r) => [r.task, r]));
  return rows.map((r) => {
    const o = then.get(r.task);
    const sites = (r.sites || []).slice(0, 3).map((s) => `<div>${esc(s.site)} <span class="hint">${s.count}</span></div>`).join("");
    return `<tr data-task="${esc(r.task)}" data-count="${r.count}" data-p99="${r.p99_ns}"${r.stuck ? ' class="stuck"' : ""}>` +
      `<td>${esc(r.task)}</td><td class="num">${r.rate_per_s.toFixed(2)}/s</td>` +
      `<td class="num">${dur(r.p50_ns)}${o ? change(r.p50_ns, o.p50_ns) : ""}</td>` +
      `<td class="num">${dur(r.p99_ns)}${o ? change(r.p99_ns, o.p99_ns) : ""}</td>` +
      `<td class="num">${dur(r.p999_ns)}${o ? change(r.p999_ns, o.p999_ns) : ""}</td>` +
      `<td>${bar(r, colors)}</td><td class="num">${r.stuck}</td><td class="sites">${sites}</td></tr>`;
  }).join("");
}

export function splitLegend(data) {
  const colors = kindColors(data.tasks || []);
  const item = (name, c) => `<span class="key"><i style="background:${c}"></i>${esc(name)}</span>`;
  return item("CPU", CPU_COLOR) + [...colors].map(([k, c]) => item(k, c)).join("") + item("other waiting", OTHER_COLOR);
}

// p50 and p99 of one task per step, on a log-free linear scale.
export function drawLatency(canvas, data) {
  const w = canvas.getBoundingClientRect().width || 600;
  const h = 140;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pts = data.timeline || [];
  const max = Math.max(1, ...pts.map((p) => p.p99_ns));
  const x = (t) => ((t - data.from) / Math.max(1, data.until - data.from)) * (w - 60) + 56;
  const y = (v) => h - 14 - (v / max) * (h - 28);
  const css = getComputedStyle(document.documentElement);
  g.fillStyle = css.getPropertyValue("--muted") || "#888";
  g.font = "11px system-ui, sans-serif";
  g.fillText(dur(max), 2, 12);
  g.fillText("0", 2, h - 14);
  g.strokeStyle = css.getPropertyValue("--line") || "#555";
  g.beginPath(); g.moveTo(56, h - 14); g.lineTo(w, h - 14); g.stroke();
  for (const [key, color] of [["p99_ns", "#e5484d"], ["p50_ns", "#4ea8de"]]) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let on = false;
    for (const p of pts) {
      if (!p.count) { on = false; continue; }
      const step = data.step_ms || 0;
      if (on) g.lineTo(x(p.time_ms + step / 2), y(p[key])); else g.moveTo(x(p.time_ms + step / 2), y(p[key]));
      on = true;
    }
    g.stroke();
  }
  canvas.dataset.points = pts.filter((p) => p.count).length;
}
