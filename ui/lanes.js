// The thread timeline: one lane per thread over the range, each step
// coloured by what the thread did most in it (from /api/v1/lanes: the
// wall profile, or the threads profile without one). A click on a step
// opens the flame graph of that thread at that time.

import { esc, fmtValue } from "./util.js";

export const STATE_COLORS = {
  running: "#3fb950",
  runnable: "#d29922",
  sleeping: "#6e7681",
  blocked: "#db6d28",
  lock: "#f85149",
};

const LANE = 18;
const LABEL = 190;

// Draws `data` into `canvas`; returns a hit-test (x, y) → {thread, t, state, ns} or null.
export function drawLanes(canvas, data) {
  const lanes = data.lanes || [];
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.parentElement.clientWidth || 900;
  const height = Math.max(LANE, lanes.length * LANE);
  canvas.style.width = width + "px";
  canvas.style.height = height + "px";
  canvas.width = width * dpr;
  canvas.height = height * dpr;
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, height);
  const span = Math.max(1, data.until - data.from);
  const x = (t) => LABEL + ((t - data.from) / span) * (width - LABEL);
  g.font = "12px ui-monospace, monospace";
  g.textBaseline = "middle";
  let cells = 0;
  lanes.forEach((lane, i) => {
    const y = i * LANE;
    g.fillStyle = getComputedStyle(canvas).color || "#ccc";
    g.fillText(lane.thread.length > 26 ? lane.thread.slice(0, 25) + "…" : lane.thread, 4, y + LANE / 2);
    for (const s of lane.steps) {
      const x0 = x(s.t), x1 = x(Math.min(s.t + data.step_ms, data.until));
      g.fillStyle = STATE_COLORS[s.state] || "#888";
      g.fillRect(x0, y + 2, Math.max(1, x1 - x0 - 1), LANE - 4);
      cells++;
    }
  });
  canvas.dataset.lanes = lanes.length;
  canvas.dataset.cells = cells;
  canvas.dataset.source = data.source || "";
  const hit = (px, py) => {
    const lane = lanes[Math.floor(py / LANE)];
    if (!lane || px < LABEL) return null;
    const t = data.from + ((px - LABEL) / (width - LABEL)) * span;
    const s = lane.steps.find((s) => t >= s.t && t < s.t + data.step_ms);
    return s ? { thread: lane.thread, t: s.t, until: s.t + data.step_ms, state: s.state, ns: s.ns } : null;
  };
  // Where (in the canvas's CSS pixels) a step of `thread` in `state` is drawn.
  hit.pointOf = (thread, state) => {
    const i = lanes.findIndex((l) => l.thread === thread);
    const s = i < 0 ? null : lanes[i].steps.find((s) => s.state === state);
    if (!s) return null;
    const x1 = x(Math.min(s.t + data.step_ms, data.until));
    return { x: (x(s.t) + x1) / 2, y: i * LANE + LANE / 2 };
  };
  return hit;
}

// The legend of the states, as HTML.
export const legend = () => Object.entries(STATE_COLORS)
  .map(([k, c]) => `<span class="key"><i style="background:${c}"></i>${esc(k)}</span>`).join(" ");

// A step's tooltip text.
export const describe = (hit) => `${hit.thread} · ${new Date(hit.t).toLocaleTimeString()} · ` +
  Object.entries(hit.ns).map(([k, v]) => `${k} ${fmtValue(v, "nanoseconds")}`).join(", ");
