// Small helpers every room of the UI uses: the DOM, the API, formatting.

export const $ = (s) => document.querySelector(s);
export const api = async (path, params) => {
  const url = path + "?" + new URLSearchParams(params);
  const r = await fetch(url);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
};

export function fmtValue(v, unit) {
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
export const pct = (v, t) => (t ? (100 * v / t) : 0).toFixed(2) + "%";
export const esc = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
export const dark = () => document.documentElement.dataset.theme !== "light";
