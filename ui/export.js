// Exports of what the flame graph shows: folded text and SVG.

import { esc } from "./util.js";
import { frameColor } from "./flame.js";

export function folded(root) {
  const out = [];
  const walk = (n, path) => {
    const p = n === root ? path : path.concat(n.name);
    if (n.self > 0 && p.length) out.push(p.join(";") + " " + n.self);
    for (const k of n.children) walk(k, p);
  };
  walk(root, []);
  return out.join("\n") + "\n";
}

export function svg(flame) {
  const w = flame.canvas.parentElement.clientWidth;
  const h = parseFloat(flame.canvas.style.height);
  const parts = flame.rects.map((r) => {
    const label = r.w > 28 ? `<text x="${(r.x + 4).toFixed(1)}" y="${(r.y + 13).toFixed(1)}">${esc(r.n.name.slice(0, Math.floor(r.w / 7)))}</text>` : "";
    return `<g><title>${esc(r.n.name)} (${r.n.total})</title><rect x="${r.x.toFixed(1)}" y="${r.y}" width="${Math.max(r.w - 1, 0.5).toFixed(1)}" height="${flame.rowH - 1}" fill="${frameColor(r.n.name)}"/>${label}</g>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="monospace" font-size="11">${parts.join("")}</svg>`;
}

export function download(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
