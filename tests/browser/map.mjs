// Browser test of the live map and the API docs, in Debian's chromium driven by playwright-core.
//
// Starts `geodispatch serve --seed seed-data` (its own redis-server, a fixed admin key), opens
// /map, checks that the seed drivers render on the city outline, dispatches an order through
// the API and checks that it appears on the map within 2 s, has its driver accept and report a
// position at the pickup and checks that the map rings the driver as arrived, opens a driver's
// details, opens /docs/, and checks that no request left the machine. Screenshots go to a temp
// dir (printed).
//
//   node tests/browser/map.mjs          (GEODISPATCH_BIN: the binary, default target/debug/geodispatch)
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.env.GEODISPATCH_BIN || join(root, "target/debug/geodispatch");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const admin = "browser-test-admin-key-0123456789";
const shots = mkdtempSync(join(tmpdir(), "gd-browser-"));

const freePort = () => new Promise((ok) => {
  const s = createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => ok(port)); });
});
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
const fail = (msg) => { throw new Error(msg); };

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const env = { ...process.env, GEODISPATCH_LISTEN: `127.0.0.1:${port}`, GEODISPATCH_REDIS_DATA_DIR: join(shots, "redis"),
  GEODISPATCH_ADMIN_KEY: admin, GEODISPATCH_KEY_PREFIX: "browser", GEODISPATCH_RATE_LIMITS_ENABLED: "false",
  // An arrival on the first position at the pickup, so the map's ring can be awaited at once.
  GEODISPATCH_ARRIVAL_DWELL_MS: "0" };
delete env.GEODISPATCH_REDIS_URL;
const service = spawn(bin, ["serve", "--seed", join(root, "seed-data")], { env, stdio: ["ignore", "ignore", "pipe"] });
let log = "";
service.stderr.on("data", (d) => { log += d; });
const api = (path, opts = {}) => fetch(base + path, { ...opts, headers: { authorization: `Bearer ${admin}`, "content-type": "application/json", ...(opts.headers || {}) } });

let browser;
try {
  const started = Date.now();
  for (;;) {
    try { if ((await fetch(base + "/readyz")).ok) break; } catch {}
    if (Date.now() - started > 15000) fail("the service was not ready within 15 s\n" + log);
    await sleep(100);
  }
  browser = await chromium.launch({
    executablePath: browserPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const external = [];
  await page.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.hostname !== "127.0.0.1" && u.protocol !== "data:") { external.push(u.href); return route.abort(); }
    return route.continue();
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // 1. The seed drivers render on the city outline.
  await page.goto(`${base}/map?key=${admin}&city=paris`);
  await page.waitForFunction(() => document.querySelectorAll("circle.driver").length >= 1000, null, { timeout: 15000 });
  const drawn = await page.evaluate(() => ({
    drivers: document.querySelectorAll("circle.driver").length,
    available: document.querySelectorAll("circle.driver.available").length,
    outline: document.querySelectorAll("path.area").length,
  }));
  if (drawn.outline < 1) fail("no city outline drawn");
  await page.screenshot({ path: join(shots, "map.png") });

  // 2. An order dispatched through the API appears on the map within 2 s, with its driver busy.
  await sleep(500); // let the page's event stream connect (it follows only new events)
  const t0 = Date.now();
  const r = await api("/v1/orders", { method: "POST", body: JSON.stringify({ pickup: { lat: 48.8566, lon: 2.3522 }, dispatch: "now" }) });
  const order = await r.json();
  if (r.status !== 201 || order.state !== "offered") fail(`order not offered: ${r.status} ${JSON.stringify(order)}`);
  await page.waitForSelector(`#o-${order.order_id}`, { timeout: 2000 });
  // The counts line follows the event that drew the order, not the next driver refresh.
  const stats = await page.textContent("#stats");
  const open = Number((stats.match(/(\d+) open orders$/) || [])[1] || 0);
  if (open < 1) fail(`counts line after the order appeared: ${stats}`);
  const readyAt = await page.getAttribute(`#o-${order.order_id}`, "data-ready-at");
  if (readyAt !== order.ready_at) fail(`order ready time on the map: ${readyAt}, API: ${order.ready_at}`);
  await page.waitForSelector(`#d-${order.driver_id}.busy`, { timeout: 2000 });
  const appearedMs = Date.now() - t0;
  await page.screenshot({ path: join(shots, "map-order.png") });

  // 3. The driver accepts and reports a position at the pickup: the map rings it as arrived.
  const accepted = await api(`/v1/orders/${order.order_id}/accept`, { method: "POST",
    body: JSON.stringify({ driver_id: order.driver_id, fencing_token: order.fencing_token }) });
  if (accepted.status !== 200) fail(`accept: ${accepted.status} ${await accepted.text()}`);
  const at = await api(`/v1/drivers/${order.driver_id}/location`, { method: "PUT",
    body: JSON.stringify({ lat: 48.8566, lon: 2.3522, recorded_at: Date.now() }) });
  if (at.status !== 200) fail(`position at the pickup: ${at.status} ${await at.text()}`);
  await page.waitForSelector(`#d-${order.driver_id}.arrived[data-arrived="pickup"]`, { timeout: 2000 });
  await page.screenshot({ path: join(shots, "map-arrived.png") });

  // 4. A click on a driver shows its state and rank.
  await page.click(`#d-${order.driver_id}`);
  await page.waitForFunction(() => (document.querySelector("#driver-detail")?.textContent || "").includes("rank:"), null, { timeout: 5000 });
  const detail = await page.textContent("#driver-detail");
  if (!detail.includes(order.driver_id) || !detail.includes("status: busy")) fail("driver detail: " + detail);

  // 5. The API docs render offline.
  await page.goto(`${base}/docs/`);
  await page.waitForSelector(".opblock", { timeout: 15000 });
  const operations = await page.locator(".opblock").count();
  await page.screenshot({ path: join(shots, "docs.png"), fullPage: false });

  if (external.length) fail("requests left the machine: " + external.join(", "));
  if (errors.length) fail("page errors: " + errors.join("; "));
  console.log(JSON.stringify({ ok: true, drawn, order: order.order_id, driver: order.driver_id, appeared_ms: appearedMs, docs_operations: operations, screenshots: shots }));
} catch (err) {
  console.error(String(err.stack || err));
  console.error("service log tail:\n" + log.split("\n").slice(-20).join("\n"));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  service.kill("SIGTERM");
  await new Promise((ok) => service.once("exit", ok));
}
