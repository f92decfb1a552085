// End-to-end test of Kiln's web UI in Debian's Chromium (headless), driven
// by playwright-core. Run by crates/kiln/tests/integration/ui.rs, which
// starts a real `kiln server`, pushes profiles, and passes KILN_URL; the
// data it pushed is described in that file. Screenshots go to KILN_SHOTS.
// Exits non-zero with the failed check's message.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const url = process.env.KILN_URL;
const shots = process.env.KILN_SHOTS || "target/e2e";
if (!url) throw new Error("KILN_URL is not set");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

let step = 0;
const check = (ok, what) => {
  if (!ok) throw new Error("check failed: " + what);
  console.log("ok", ++step, what);
};
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const ready = () => page.waitForSelector("body[data-ready='1']", { timeout: 30000 });
const attr = (sel, a) => page.$eval(sel, (e, a) => e.dataset[a], a);

const Q = 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="shop"}';
const shared = `${url}/?query=${encodeURIComponent(Q)}&from=now-1h&until=now`;

try {
  // A shared link loads the graph, the top table and the timeline.
  await page.goto(shared);
  await ready();
  await page.waitForSelector("#top tbody tr");
  const rows = await page.$$eval("#top tbody tr", (t) => t.map((r) => ({ name: r.dataset.name, self: +r.dataset.self, pareto: r.dataset.pareto })));
  check(rows.length >= 6, `top table has rows (${rows.length})`);
  check(rows[0].name === "shop::cache::evict_loop", `hottest function first: ${rows[0].name}`);
  check(rows.every((r, i) => i === 0 || rows[i - 1].self >= r.self), "sorted by self");
  check(await page.$("#top tr.pareto-cut") !== null, "the Pareto-80% cut is marked");
  check(Number(await attr("#flame", "nodes")) > 10, "the flame graph has nodes");
  check(Number(await attr("#flame", "drawn")) > 10, "frames are drawn");
  check(Number(await attr("#timeline", "points")) >= 2, "the timeline has points");
  // The graph opens as an icicle: its root row is on the first screen,
  // though the main thread's stack is deeper than the screen is tall.
  const root0 = await page.evaluate(() => window.kiln.rectOf("total"));
  const viewport = page.viewportSize().height;
  const canvasH = await page.$eval("#flame", (c) => c.getBoundingClientRect().height);
  check(canvasH > viewport * 0.8, `the graph is deep (${canvasH} px)`);
  check(root0 && root0.y > 0 && root0.y < viewport, `the root row is on the first screen (y ${root0 && root0.y.toFixed(0)} of ${viewport})`);
  check(await page.isChecked("#icicle"), "icicle is the default");
  check(await page.evaluate(() => window.kiln.drawn().includes("start_thread")), "thread-start glue is drawn by default");
  await shot("1-loaded");

  // Click a frame (canvas hit-testing) to zoom; the breadcrumb leads back.
  const r = await page.evaluate(() => window.kiln.rectOf("shop::checkout::handle"));
  check(r && r.w > 10, "the handler frame is drawn wide enough to click");
  check(await page.evaluate(([x, y]) => window.kiln.hit(x, y), [r.x, r.y]) === "shop::checkout::handle", "hit-testing finds the frame under the point");
  // The tooltip counts samples: the handler's stacks hold 482 samples of
  // 10 ms a profile in the first phase, 601 in the second, 60 profiles each.
  await page.mouse.move(r.x, r.y);
  const tip = await page.textContent("#tip");
  check(tip.includes("shop::checkout::handle") && tip.includes("64,980 samples"), `the tooltip counts the handler's samples (${tip})`);
  await page.mouse.click(r.x, r.y);
  const zoom = await attr("#flame", "zoom");
  check(zoom.endsWith("shop::checkout::handle"), `zoomed to the handler (${zoom})`);
  check(page.url().includes("focus="), "the zoom is in the URL");
  check((await page.$$("#crumbs a")).length >= 2, "a breadcrumb appears");
  const zoomedTotal = await page.evaluate(() => window.kiln.rectOf("shop::checkout::price").w);
  check(zoomedTotal > r.w * 0.3, "children of the zoomed frame widen");
  await shot("2-zoomed");

  // The link is shareable: a reload shows the same zoom.
  await page.reload();
  await ready();
  check((await attr("#flame", "zoom")) === zoom, "reload keeps the zoom");
  await page.click("#crumbs a[data-depth='0']");
  check((await attr("#flame", "zoom")) === "", "the breadcrumb's root unzooms");

  // Search highlights matches and sums their share.
  await page.keyboard.press("/");
  check(await page.evaluate(() => document.activeElement.id) === "search", "/ focuses search");
  await page.keyboard.type("db::");
  await page.waitForFunction(() => document.querySelector("#flame").dataset.matches > 0);
  const share = Number(await attr("#flame", "matchShare"));
  // shop::db::query with its callee, of everything pushed (ui.rs):
  // 60 profiles of each phase; per profile, the seconds of each stack.
  // The main thread's 0.3 s in both; the second instance's evictor in 15
  // profiles of the late phase.
  const base = 3 + 3 / 4 + 0.5 + 0.5 / 3 + 0.4 + 0.2 + 0.1 + 9.5 + 0.3;
  const late = 0.75 + 0.75 / 4 + 3.5 + 3.5 / 3 + 0.4 + 0.2 + 0.1 + 9.5 + 0.3;
  const want = 60 * (0.5 + 0.5 / 3 + 3.5 + 3.5 / 3) / (60 * (base + late) + 15 * 9.8);
  check(Math.abs(share - want) < 0.001, `search sums the matches' share (${share}, want ${want.toFixed(4)})`);
  check((await page.textContent("#matches")).includes("% of total"), "the share is shown");
  // The searched function's share over time, under the timeline: in the
  // late phase a minute of shop-1 alone is 4.667 s of db in 16.104 s.
  await page.waitForFunction(() => Number(document.querySelector("#fn-timeline").dataset.points || 0) >= 20);
  const peak = Number(await attr("#fn-timeline", "peak"));
  check(Math.abs(peak - 100 * 4.6667 / 16.104) < 0.5, `the function's share over time peaks at its late-phase share (${peak})`);
  check((await page.textContent("#fn-label")).includes("db::"), "labelled with the search");
  await shot("3-search");
  await page.keyboard.press("Escape");
  check((await page.inputValue("#search")) === "", "Escape clears the search");

  // A click in the top table focuses the function in the graph.
  await page.click('#top tbody tr[data-name="serde_json::de::from_str"]');
  check(Number(await attr("#flame", "matches")) >= 1, "a top-table click lights the function up");
  // Filter, sort.
  await page.fill("#filter", "shop::");
  const filtered = await page.$$eval("#top tbody tr", (t) => t.map((r) => r.dataset.name));
  check(filtered.length >= 3 && filtered.every((n) => n.includes("shop::")), "the filter keeps matching rows");
  await page.click('#top th[data-sort="name"]');
  const names = await page.$$eval("#top tbody tr", (t) => t.map((r) => r.dataset.name));
  check(names.join() === [...names].sort((a, b) => a.localeCompare(b)).join(), "sorting by name");
  await page.fill("#filter", "");

  // Sandwich of one function: callers above, callees below.
  await page.dblclick('#top tbody tr[data-name="serde_json::de::from_str"]');
  check((await attr("#flame", "sandwich")) === "serde_json::de::from_str", "sandwich view");
  const callers = await page.evaluate(() => window.kiln.rectOf("shop::checkout::handle"));
  check(callers !== null, "the sandwich shows a caller");
  await shot("4-sandwich");
  await page.click("#sandwich-close");

  // Unchecking icicle draws the classic flame: the root at the bottom,
  // here below the first screen; the choice is in the URL.
  const before = await page.evaluate(() => window.kiln.rectOf("total").y);
  await page.uncheck("#icicle");
  const after = await page.evaluate(() => window.kiln.rectOf("total").y);
  check(after > before && after > viewport, `the flame draws the root at the bottom (y ${after.toFixed(0)})`);
  check(page.url().includes("icicle=0"), "the flame orientation is in the URL");
  await shot("4b-flame");
  await page.check("#icicle");
  check(!page.url().includes("icicle="), "icicle, the default, leaves the URL");

  // Hiding thread-start glue: the graph starts at each thread's first
  // frame of its own, the zoom holds, and the link keeps it.
  const glueNames = ["__clone3", "start_thread", "_start", "__libc_start_main", "main",
    "std::panicking::catch_unwind", "std::sys::backtrace::__rust_begin_short_backtrace"];
  const h0 = await page.evaluate(() => window.kiln.rectOf("shop::checkout::handle"));
  await page.mouse.click(h0.x, h0.y);
  const zoomedWithGlue = await attr("#flame", "zoom");
  check(zoomedWithGlue.startsWith("__clone3;start_thread;"), `the zoom path holds the glue (${zoomedWithGlue.slice(0, 40)}…)`);
  await page.check("#glue");
  check(page.url().includes("glue=hide"), "hidden glue is in the URL");
  check((await attr("#flame", "zoom")) === "shop::server::run;shop::checkout::handle", `the zoom holds without the glue (${await attr("#flame", "zoom")})`);
  await page.click("#crumbs a[data-depth='0']");
  const drawnNoGlue = await page.evaluate(() => window.kiln.drawn());
  const left = glueNames.filter((n) => drawnNoGlue.includes(n));
  check(left.length === 0, `no glue frame is drawn (${left})`);
  const total1 = await page.evaluate(() => window.kiln.rectOf("total"));
  for (const first of ["shop::server::run", "shop::cache::evict_loop", "shop::main"]) {
    const r1 = await page.evaluate((n) => window.kiln.rectOf(n), first);
    check(r1 && Math.abs(r1.y - total1.y - 18) < 0.5, `${first} is right below the root`);
  }
  const h1 = await page.evaluate(() => window.kiln.rectOf("shop::checkout::handle"));
  check(Math.abs(h1.w - h0.w) < 0.01, `the handler keeps its width (${h1.w.toFixed(2)} vs ${h0.w.toFixed(2)})`);
  await shot("4c-glue-hidden");
  await page.reload();
  await ready();
  check(await page.isChecked("#glue"), "reload keeps the glue hidden");
  check(!(await page.evaluate(() => window.kiln.drawn().includes("start_thread"))), "still without start_thread");
  await page.uncheck("#glue");
  check(await page.evaluate(() => window.kiln.drawn().includes("start_thread")), "showing the glue draws it again");
  check(!page.url().includes("glue="), "shown glue, the default, leaves the URL");

  // Exports.
  const pprofHref = await page.getAttribute("#export-pprof", "href");
  const status = await page.evaluate(async (h) => (await fetch(h)).status, pprofHref);
  check(status === 200, "the pprof export downloads");
  const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#export-svg")]);
  check(dl.suggestedFilename() === "flamegraph.svg", "the SVG export downloads");

  // Theme.
  const t0 = await page.evaluate(() => document.documentElement.dataset.theme);
  await page.click("#theme");
  const t1 = await page.evaluate(() => document.documentElement.dataset.theme);
  check(t0 !== t1, `theme toggles (${t0} → ${t1})`);
  await shot("5-theme");

  // The timeline: one line per value of a label; a drag zooms the range.
  await page.selectOption("#group-by", "instance");
  await page.waitForFunction(() => document.querySelector("#legend").textContent.includes("shop-1") || document.querySelector("#timeline").dataset.lines === "1");
  check(page.url().includes("groupBy=instance"), "group by is in the URL");
  const tl = await page.$eval("#timeline", (c) => { const b = c.getBoundingClientRect(); return { x: b.left, y: b.top, w: b.width, h: b.height }; });
  await page.mouse.move(tl.x + tl.w * 0.1, tl.y + tl.h / 2);
  await page.mouse.down();
  await page.mouse.move(tl.x + tl.w * 0.3, tl.y + tl.h / 2, { steps: 4 });
  await page.mouse.up();
  await ready();
  const u = new URL(page.url());
  const from = Number(u.searchParams.get("from")), until = Number(u.searchParams.get("until"));
  check(from > 0 && until > from && until - from < 30 * 60_000, `dragging the timeline zooms the range (${(until - from) / 60000} min)`);
  check((await page.inputValue("#preset")) === "custom", "the range is now custom");

  // Comparison: the first half hour against the second.
  await page.goto(`${url}/?query=${encodeURIComponent(Q)}&from=now-1h&until=now-30m&tab=compare&rfrom=now-30m&runtil=now`);
  await ready();
  await page.waitForSelector("#movers tbody tr");
  const movers = await page.$$eval("#movers tbody tr", (t) => t.map((r) => ({ name: r.dataset.name, delta: +r.dataset.delta, cls: r.className })));
  const db = movers.find((m) => m.name === "shop::db::query");
  const price = movers.find((m) => m.name === "shop::checkout::price");
  check(db && db.delta > 2 && db.cls === "grew", `the database query grew (${db && db.delta})`);
  check(price && price.delta < -2 && price.cls === "shrank", `pricing shrank (${price && price.delta})`);
  check(Number(await attr("#diff", "stacks")) > 3, "the diff flame graph has stacks");
  check(await page.evaluate(() => window.kiln.diffRectOf("shop::db::query")) !== null, "the diff graph draws the grown frame");
  await shot("6-compare");

  // The live heap: offered by name, a gauge over time (what is held each
  // minute, not the sum of windows), and "What grew" between the start
  // of the range and its end (ui.rs: the cache from 10 to 50 MiB).
  const H = 'memory:inuse_space:bytes:space:bytes{service_name="shop"}';
  await page.goto(`${url}/?query=${encodeURIComponent(H)}&from=now-55m&until=now`);
  await ready();
  const typeText = await page.$eval("#type", (s) => s.selectedOptions[0].textContent);
  check(/in use/i.test(typeText), `the type menu names the live heap (${typeText})`);
  const allocText = await page.$$eval("#type option", (o) => o.map((x) => x.textContent).find((t) => t.includes("alloc_space")) || "");
  check(/allocated/i.test(allocText), `…and allocation beside it (${allocText})`);
  await page.waitForSelector("#top tbody tr");
  const heapRows = await page.$$eval("#top tbody tr", (t) => t.map((r) => ({ name: r.dataset.name, self: +r.dataset.self })));
  const fill = heapRows.find((r) => r.name === "shop::cache::fill");
  const sess = heapRows.find((r) => r.name === "shop::session::open");
  check(sess && Math.abs(sess.self - 20 * 2 ** 20) < 2 ** 16, `the sessions hold their 20 MiB over the range, not 20 MiB per window (${sess && sess.self})`);
  check(fill && fill.self > 10 * 2 ** 20 && fill.self < 50 * 2 ** 20, `the cache's mean lies between what it held early and late (${fill && fill.self})`);
  check(!heapRows.some((r) => r.name === "shop::render::page"), "rendering holds nothing");
  await page.waitForFunction(() => document.querySelector("#timeline-note").textContent.includes("peak"));
  const note = await page.textContent("#timeline-note");
  check(note.includes("peak 70.0 MiB"), `the heap over time peaks at what the late minutes held (${note})`);
  await shot("6b-heap");
  await page.click("#tabs button[data-tab='compare']");
  await page.click("#grew");
  await page.waitForFunction(() => new URLSearchParams(location.search).get("grew") === "1");
  await page.waitForFunction(() => document.querySelector("#movers tbody tr") && document.querySelector("#movers thead").textContent.includes("Grew by"));
  const grew = await page.$$eval("#movers tbody tr", (t) => t.map((r) => ({ name: r.dataset.name, delta: +r.dataset.delta, text: r.innerText })));
  check(grew[0].name === "shop::cache::fill" && grew[0].delta === 40 * 2 ** 20 && grew[0].text.includes("+40.0 MiB"), `what grew: the cache, by 40 MiB (${JSON.stringify(grew[0])})`);
  const held = grew.find((r) => r.name === "shop::session::open");
  check(held && held.delta === 0, `the sessions held still (${held && held.text})`);
  check((await page.textContent("#compare-note")).startsWith("What grew"), "the comparison says what it compares");
  check(await page.evaluate(() => window.kiln.diffRectOf("shop::cache::fill")) !== null, "the diff graph draws the grown frame");
  await shot("6c-heap-grew");

  // Threads over the last 10 minutes: pools and threads, the busy ones
  // marked — the second instance's evictor too, though it ran only the
  // last 2.5 minutes: its cores are over the time it was seen.
  await page.goto(`${url}/?query=${encodeURIComponent(Q)}&from=now-10m&until=now&tab=threads`);
  await ready();
  await page.waitForSelector("#threads tbody tr");
  const threads = await page.$$eval("#threads tbody tr", (t) => t.map((r) => ({ name: r.dataset.name, cores: +r.dataset.cores, seen: +r.dataset.seen, hot: r.classList.contains("hot"), text: r.textContent })));
  const hot = threads.find((t) => t.name === "hot-loop");
  check(hot && hot.hot && hot.cores > 0.8, `a thread near a full core stands out (${hot && hot.cores})`);
  const evictor = threads.find((t) => t.name === "cache-evictor");
  check(evictor && evictor.hot && Math.abs(evictor.cores - 0.98) < 0.005, `a thread busy for part of the range shows near a full core (${evictor && evictor.cores})`);
  check(evictor.seen === 150e9 && evictor.text.includes("0.98") && evictor.text.includes("2.5 min"), `…over the 2.5 minutes it was seen (${evictor.text})`);
  check(threads.filter((t) => t.hot).map((t) => t.name).sort().join() === "cache-evictor,hot-loop", "only those two");
  const pools = await page.$$eval("#pools tbody tr", (t) => t.map((r) => r.dataset.name));
  check(pools.includes("worker-*"), `pools are listed (${pools})`);
  // Each thread's own counters, and the pool that switches far more than
  // it computes marked.
  const poolRows = await page.$$eval("#pools tbody tr", (t) => t.map((r) => ({ name: r.dataset.name, switchy: r.classList.contains("switchy"), switches: +r.dataset.switches, text: r.textContent })));
  const offload = poolRows.find((r) => r.name === "offload-*");
  check(offload && offload.switchy && offload.switches > 100000, `the offload pool is marked switching (${offload && offload.text})`);
  check(poolRows.filter((r) => r.switchy).map((r) => r.name).join() === "offload-*", "only that pool");
  const hotRow = threads.find((t) => t.name === "hot-loop");
  check(/\d/.test(hotRow.text.split("min")[1] || ""), `a thread's run delay and switches are shown (${hotRow.text})`);
  check(page.url().includes("tab=threads"), "the tab is in the URL");
  await shot("7-threads");

  // The thread timeline: a lane per thread from the wall profile, each
  // step in its state's colour; a click opens that thread's flame graph.
  await page.waitForFunction(() => Number(document.querySelector("#lanes").dataset.cells || 0) > 0);
  check(await attr("#lanes", "source") === "wall", "the lanes come from the wall profile");
  check(Number(await attr("#lanes", "lanes")) >= 3, `a lane per thread (${await attr("#lanes", "lanes")})`);
  const pixel = (p) => page.evaluate(({ x, y }) => {
    const c = document.querySelector("#lanes");
    const k = c.width / c.getBoundingClientRect().width;
    return [...c.getContext("2d").getImageData(Math.round(x * k), Math.round(y * k), 1, 1).data.slice(0, 3)];
  }, p);
  const hex = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
  const near = (a, b) => a.every((v, i) => Math.abs(v - b[i]) < 12);
  const hotAt = await page.evaluate(() => window.kiln.lanePoint("hot-loop", "running"));
  check(hotAt && near(await pixel(hotAt), hex("#3fb950")), "hot-loop's lane is drawn running (green)");
  const lockAt = await page.evaluate(() => window.kiln.lanePoint("worker-2", "lock"));
  check(lockAt && near(await pixel(lockAt), hex("#f85149")), "worker-2's lane is drawn waiting on a lock (red)");
  const sleepAt = await page.evaluate(() => window.kiln.lanePoint("worker-1", "sleeping"));
  check(sleepAt && near(await pixel(sleepAt), hex("#6e7681")), "worker-1's lane is drawn asleep (grey)");
  check((await page.textContent("#lanes-legend")).includes("runnable"), "the legend names the states");
  await shot("8-lanes");
  const box = await page.$eval("#lanes", (c) => { const r = c.getBoundingClientRect(); return { x: r.left, y: r.top }; });
  await page.mouse.click(box.x + lockAt.x, box.y + lockAt.y);
  await page.waitForFunction(() => new URLSearchParams(location.search).get("tab") === null);
  await ready();
  const laneQuery = await page.evaluate(() => window.kiln.state.query);
  check(laneQuery.startsWith("wall:wall:") && laneQuery.includes('thread_name="worker-2"'), `the click opens worker-2's wall flame graph (${laneQuery})`);
  await page.waitForFunction(() => window.kiln.drawn().includes("shop::cache::get"));
  check(!(await page.evaluate(() => window.kiln.drawn().includes("shop::cache::evict_loop"))), "…of that thread only");
  await shot("9-lane-flame");

  // Locks: which lock everyone waits on, then its waiters' flame graph.
  await page.goto(`${url}/?query=${encodeURIComponent(Q)}&from=now-10m&until=now&tab=locks`);
  await ready();
  await page.waitForSelector("#locks tbody tr[data-name]");
  const locks = await page.$$eval("#locks tbody tr[data-name]", (t) => t.map((r) => ({ name: r.dataset.name, text: r.textContent })));
  check(locks[0].name === "sessions" && locks.length === 2, `the most waited-on lock first (${locks.map((l) => l.name)})`);
  check(locks[0].text.includes("%"), `with its share (${locks[0].text})`);
  await shot("10-locks");
  await page.click('#locks tbody tr[data-name="sessions"]');
  await page.waitForFunction(() => window.kiln.state.tab === "flame");
  await ready();
  await page.waitForFunction(() => window.kiln.drawn().includes("shop::cache::get"));
  const lockQuery = await page.evaluate(() => window.kiln.state.query);
  check(lockQuery.startsWith("mutex:delay") && lockQuery.includes('lock="sessions"'), `the lock opens its waiters' flame graph (${lockQuery})`);
  check(!(await page.evaluate(() => window.kiln.drawn().includes("shop::db::query"))), "…and only theirs");
  await page.waitForFunction(() => Number(document.querySelector("#timeline").dataset.points || 0) >= 2);
  check(true, "the timeline draws the waits on that lock over time");
  await shot("11-lock-flame");

  // Tasks: the slowest in total first, percentiles, where time went,
  // stuck runs, sites; a click draws the task's latency over time.
  await page.goto(`${url}/?query=${encodeURIComponent(Q)}&from=now-11m&until=now&tab=tasks`);
  await ready();
  await page.waitForSelector("#tasks tbody tr[data-task]");
  const tasks = await page.$$eval("#tasks tbody tr[data-task]", (t) => t.map((r) => ({ task: r.dataset.task, count: +r.dataset.count, p99: +r.dataset.p99, text: r.innerText })));
  check(tasks.map((t) => t.task).join() === "save_board,open_board", `tasks by time spent (${tasks.map((t) => t.task)})`);
  const ob = tasks[1];
  check(ob.count === 6000, `every operation of the last 10 minutes counted (${ob.count})`);
  check(Math.abs(ob.p99 - 80e6) <= 0.01 * 80e6 && /8\d\.\d\d ms|79\.\d\d ms/.test(ob.text), `p99 is the 80 ms tail, shown as such (${ob.text})`);
  check(/shop::board::load_rows:42/.test(ob.text), "its top site is named");
  check(/\b10\b/.test(tasks[0].text.split("\t")[6] || ""), `save_board's stuck runs (${tasks[0].text})`);
  const cpuPart = await page.$eval('#tasks tr[data-task="save_board"] i[data-part="CPU"]', (e) => ({ w: e.getBoundingClientRect().width, bar: e.parentElement.getBoundingClientRect().width, bg: getComputedStyle(e).backgroundColor }));
  check(Math.abs(cpuPart.w / cpuPart.bar - 200 / 2400) < 0.02 && cpuPart.bg === "rgb(255, 138, 61)", `save_board's bar is 8% CPU, drawn orange (${JSON.stringify(cpuPart)})`);
  check((await page.textContent("#tasks-legend")).includes("redis"), "the legend names the I/O kinds");
  await page.click('#tasks tbody tr[data-task="open_board"]');
  await page.waitForFunction(() => Number(document.querySelector("#task-latency").dataset.points || 0) >= 2);
  const red = await page.evaluate(() => {
    const c = document.querySelector("#task-latency");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 100 && d[i + 2] < 100) n++;
    return n;
  });
  check(red > 50, `open_board's p99 line is drawn (${red} red pixels)`);
  await shot("12-tasks");
  await page.click("#task-flame");
  await page.waitForFunction(() => window.kiln.state.tab === "flame");
  check((await page.evaluate(() => window.kiln.state.query)).includes('task="open_board"'), "the task opens its flame graph");

  // Events: the stuck task, its stack on a click, then that instance's
  // flame graph at that time.
  await page.goto(`${url}/?query=${encodeURIComponent(Q)}&from=now-11m&until=now&tab=events`);
  await ready();
  await page.waitForSelector("#events tbody tr[data-i]");
  const ev = await page.$$eval("#events tbody tr[data-i]", (t) => t.map((r) => r.innerText));
  check(ev.length === 1 && /save_board/.test(ev[0]) && /board-saver/.test(ev[0]) && /640\.00 ms/.test(ev[0]) && /wait_for_disk:88/.test(ev[0]), `the stuck task is listed (${ev})`);
  await page.click("#events tbody tr[data-i='0']");
  const stack = await page.textContent("#event-stack");
  check(stack.split("\n")[1].startsWith("shop::board::wait_for_disk"), `its stack is shown (${stack})`);
  await shot("13-events");
  // The event is marked on the timeline, in red, where it happened.
  const marks = await page.$eval("#timeline", (c) => ({ n: Number(c.dataset.markers), xs: c.dataset.markerXs }));
  const markPixel = await page.evaluate((x) => {
    const c = document.querySelector("#timeline");
    const k = c.width / c.getBoundingClientRect().width;
    return [...c.getContext("2d").getImageData(Math.round(x * k), Math.round(3 * k), 1, 1).data.slice(0, 3)];
  }, Number(marks.xs));
  check(marks.n === 1 && markPixel[0] > 200 && markPixel[1] < 100, `the event is marked on the timeline (${JSON.stringify(marks)}, ${markPixel})`);
  await page.click("#event-flame");
  await page.waitForFunction(() => window.kiln.state.tab === "flame");
  check((await page.evaluate(() => window.kiln.state.query)).includes('instance="shop-1"'), "the event opens that instance's flame graph");

  // Alerts: the rule over the evictor fires (red), the other does not;
  // a click opens what the rule watches.
  await page.goto(`${url}/?query=${encodeURIComponent(Q)}&from=now-1h&until=now&tab=alerts`);
  await ready();
  await page.waitForSelector("#alerts tbody tr[data-name]");
  const rules = await page.$$eval("#alerts tbody tr[data-name]", (t) => t.map((r) => ({ name: r.dataset.name, state: r.dataset.state, text: r.innerText, color: getComputedStyle(r.querySelector(".state")).color })));
  const hotRule = rules.find((r) => r.name === "evictor hot"), coolRule = rules.find((r) => r.name === "pricing hot");
  check(hotRule && hotRule.state === "firing" && /firing/.test(hotRule.text) && /\d+\.\d\d%/.test(hotRule.text) && hotRule.color === "rgb(229, 72, 77)", `the evictor's rule is firing, in red (${JSON.stringify(hotRule)})`);
  check(coolRule && coolRule.state === "inactive", `the pricing rule is not (${JSON.stringify(coolRule)})`);
  await shot("14-alerts");
  await page.click('#alerts tbody tr[data-name="evictor hot"]');
  await page.waitForFunction(() => window.kiln.state.tab === "flame");
  await ready();
  check(await page.evaluate(() => window.kiln.drawn().includes("shop::cache::evict_loop")), "the rule opens the flame graph it watches");

  check(errors.length === 0, "no errors in the page: " + errors.join("; "));
  console.log(`all ${step} checks passed`);
} catch (e) {
  await shot("failed").catch(() => {});
  console.error(e.message);
  if (errors.length) console.error("page errors:", errors.join("; "));
  process.exitCode = 1;
} finally {
  await browser.close();
}
