// The timeline: the selection's total per minute, one line per value of
// the group-by label; a drag across it picks a range.

import { $, esc } from "./util.js";

const PALETTE = ["#ff8a3d", "#4ea8de", "#8bd17c", "#d33aff", "#f2c14e", "#e5484d", "#30a46c", "#9aa3ad"];

export function drawTimeline(data, from, until) {
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

// Watchdog events on the timeline: a red mark at the top for each stuck
// task or deadlock, its title in the mark's tooltip list.
export function drawMarkers(events) {
  const c = $("#timeline");
  if (!timelineRange) return;
  const { from, until, w } = timelineRange;
  const g = c.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  const xs = [];
  g.fillStyle = "#e5484d";
  for (const e of events) {
    if (e.time_ms < from || e.time_ms > until) continue;
    const x = ((e.time_ms - from) / (until - from)) * w;
    g.beginPath(); g.moveTo(x - 5, 0); g.lineTo(x + 5, 0); g.lineTo(x, 9); g.closePath(); g.fill();
    xs.push(Math.round(x));
  }
  c.dataset.markers = xs.length;
  c.dataset.markerXs = xs.join(",");
  c.title = events.length ? events.map((e) => `${new Date(e.time_ms).toLocaleTimeString()} ${e.kind}: ${e.task || e.thread_name}`).join("\n") : "";
}

// `pick(from, until)` gets the dragged range, in milliseconds.
export function wireTimelineDrag(pick) {
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
    pick(t(a), t(b));
  });
}
