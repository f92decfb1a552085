// Driven by bench/ui.sh: times navigation → first flame graph drawn, for
// Kiln's UI and for an inferno SVG of the same profile.
import { createRequire } from "node:module";
import { resolve } from "node:path";
const require = createRequire(resolve("e2e/package.json"));
const { chromium } = require("playwright-core");

const [url, svg, runs] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
// The first animation frame after the content is ready: when the browser
// presents it. Kiln's UI notes that moment itself (#flame's
// data-first-paint); for the SVG it is the first frame after `load`.
const painted = () => new Promise((r) => requestAnimationFrame(() => r(performance.now())));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const kiln = [], inferno = [];
let nodes = 0;
for (let i = 0; i < Number(runs); i++) {
  let page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
  await page.goto(`${url}/?query=${encodeURIComponent("process_cpu{}")}&from=now-1h&until=now`);
  await page.waitForFunction(() => document.querySelector("#flame").dataset.firstPaint, null, { timeout: 60000 });
  kiln.push(Number(await page.$eval("#flame", (e) => e.dataset.firstPaint)));
  nodes = Number(await page.$eval("#flame", (e) => e.dataset.nodes));
  await page.close();
  page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
  await page.goto("file://" + resolve(svg), { waitUntil: "load", timeout: 120000 });
  inferno.push(await page.evaluate(painted));
  await page.close();
}
await browser.close();
const k = median(kiln), f = median(inferno);
console.log(`nodes=${nodes} runs=${runs}`);
console.log(`kiln_ui_first_graph_ms=${k.toFixed(0)} all=${kiln.map((x) => x.toFixed(0)).join(",")}`);
console.log(`inferno_svg_first_paint_ms=${f.toFixed(0)} all=${inferno.map((x) => x.toFixed(0)).join(",")}`);
console.log(`ratio_inferno_over_kiln=${(f / k).toFixed(1)}`);
