// The dashboard in a real browser: Debian's chromium driven by playwright-core, against the
// real binary serving a seeded demo store. Run from tests/browser: `npm test`.
//
// WHATSTAT_BIN overrides the binary (default: target/debug/whatstat of this repository).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const bin = process.env.WHATSTAT_BIN || path.join(root, "target/debug/whatstat");
const shots = path.join(root, "target/screenshots");
const MASTER = "master-for-browser-tests";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];

let server, base, key, browser, dir, openapi;
const requests = [];
const consoleErrors = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function startServer() {
  dir = mkdtempSync(path.join(tmpdir(), "whatstat-browser-"));
  const port = await freePort();
  server = spawn(bin, ["serve", "--demo", "--database-url", `sqlite://${dir}/whatstat.db`,
    "--listen", `127.0.0.1:${port}`, "--master-key", MASTER, "--compact-interval-secs", "0"],
  { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WHATSTAT_LOG: "warn" } });
  let out = "";
  let err = "";
  server.stderr.on("data", (d) => { err += d; });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server printed no dashboard link in 180 s:\n${out}\n${err}`)), 180_000);
    server.once("exit", (code) => reject(new Error(`the server exited with ${code}:\n${out}\n${err}`)));
    server.stdout.on("data", (d) => {
      out += d;
      const k = out.match(/API key: (ws_[0-9a-f]+)/);
      const link = out.match(/Dashboard: (http:\/\/\S+?)\/? /);
      if (k && link) { clearTimeout(timer); key = k[1]; base = link[1]; resolve(); }
    });
  });
}

async function apiGet(p, token = key) {
  const res = await fetch(`${base}${p}`, { headers: { Authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.json() };
}
async function apiData(p, token = key) {
  const { status, body } = await apiGet(p, token);
  assert.equal(status, 200, `${p}: ${JSON.stringify(body)}`);
  return body.data;
}

async function newPage(width, { expectErrors = false, colorScheme = "light" } = {}) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, acceptDownloads: true, colorScheme });
  const page = await context.newPage();
  page.on("request", (r) => requests.push(r.url()));
  page.on("console", (m) => { if (m.type() === "error" && !expectErrors) consoleErrors.push(`${m.text()} (${page.url()})`); });
  page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message} (${page.url()})`));
  return page;
}

async function signIn(page, token = key) {
  await page.goto(`${base}/`);
  await page.getByLabel("API key").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator('[data-metric="messages.total_sent"]').waitFor();
}

// Every figure the page shows with its raw value, by metric name.
async function shown(page, scope = "body") {
  return page.locator(scope).evaluate((el) => Object.fromEntries([...el.querySelectorAll("[data-metric]")]
    .map((e) => [e.dataset.metric, e.dataset.value])));
}

function expectOverview(values, m, c, d) {
  const s = m.summary, cs = c.summary;
  const want = {
    "messages.total_sent": s.total_sent, "messages.total_received": s.total_received,
    "messages.total_delivered": s.total_delivered, "messages.total_read": s.total_read,
    "messages.total_failed": s.total_failed, "messages.delivery_rate": s.delivery_rate,
    "messages.read_rate": s.read_rate,
    "chatbot.total_conversations": cs.total_conversations, "chatbot.auto_resolved": cs.auto_resolved,
    "chatbot.transferred_to_agent": cs.transferred_to_agent, "chatbot.abandoned": cs.abandoned,
    "chatbot.resolution_rate": cs.resolution_rate,
    "dashboard.contacts.total": d.contacts.total, "dashboard.contacts.new_today": d.contacts.new_today,
    "dashboard.contacts.new_this_week": d.contacts.new_this_week,
    "dashboard.contacts.growth_percent": d.contacts.growth_percent,
    "dashboard.campaigns.total": d.campaigns.total, "dashboard.campaigns.active": d.campaigns.active,
    "dashboard.campaigns.completed_this_month": d.campaigns.completed_this_month,
    "dashboard.messages.today": d.messages.today,
    "dashboard.chatbot.conversations_today": d.chatbot.conversations_today,
    "chatbot.avg_messages_per_conversation": cs.avg_messages_per_conversation,
    "chatbot.avg_resolution_time_seconds": cs.avg_resolution_time_seconds,
    "chatbot.ai_usage.total_requests": c.ai_usage.total_requests,
    "chatbot.ai_usage.total_tokens": c.ai_usage.total_tokens,
    "chatbot.ai_usage.estimated_cost": c.ai_usage.estimated_cost,
    "funnel.total_sent": s.total_sent, "funnel.total_delivered": s.total_delivered, "funnel.total_read": s.total_read,
  };
  for (const [type, n] of Object.entries(m.by_type)) want[`by_type.${type}`] = n;
  for (const k of c.top_keywords) want[`top_keywords.${k.keyword}`] = k.count;
  for (const [metric, value] of Object.entries(want)) {
    assert.equal(values[metric], String(value), `${metric}: the page shows ${values[metric]}, the API ${value}`);
  }
  assert.ok(s.total_sent > 0, "the seeded store has messages");
}

async function tableRows(page, name) {
  return page.locator(`table[data-table="${name}"]`).evaluate((t) => [...t.tBodies[0].rows]
    .map((r) => Object.fromEntries([...r.cells].map((c) => [c.dataset.key, c.dataset.value]))));
}

function sameRows(rows, apiRows, keys) {
  assert.equal(rows.length, apiRows.length, "row count");
  rows.forEach((r, i) => { for (const k of keys) assert.equal(r[k], String(apiRows[i][k] ?? ""), `row ${i} ${k}`); });
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  await startServer();
  openapi = await (await fetch(`${base}/api/openapi.json`)).text();
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: FLAGS });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the default view shows the API's figures for the last 30 days, all accounts", async () => {
  const page = await newPage(1440);
  await signIn(page);
  const [m, c, d] = await Promise.all([apiData("/api/analytics/messages"), apiData("/api/analytics/chatbot"), apiData("/api/analytics/dashboard")]);
  expectOverview(await shown(page), m, c, d);
  assert.equal(await page.locator("#org-name").textContent(), "Demo Store");
  assert.match(await page.locator("#org-tz").textContent(), /Asia\/Kolkata/);
  assert.match(await page.locator('[data-metric="messages.total_sent"]').textContent(), /^\d{1,3}(,\d{3})+$/, "thousands separators");
  assert.match(await page.locator('[data-metric="messages.delivery_rate"]').textContent(), /^\d+(\.\d)? %$/);
  await page.getByRole("tab", { name: "Messages" }).click();
  sameRows(await tableRows(page, "messages.timeline"), m.timeline, ["date", "sent", "received", "delivered", "read", "failed"]);
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(shots, "messages-1440.png"), fullPage: true });
  await page.getByRole("tab", { name: "Chatbot" }).click();
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(shots, "chatbot-1440.png"), fullPage: true });
  await page.getByRole("tab", { name: "Overview" }).click();
  await page.screenshot({ path: path.join(shots, "overview-1440.png"), fullPage: true });
  await page.context().close();
});

test("changing account, range and granularity shows the API's figures for them", async () => {
  const page = await newPage(1440);
  await signIn(page);
  const today = await page.evaluate(() => new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Kolkata" }).format(new Date()));
  const minus = (n) => { const t = new Date(`${today}T00:00:00Z`); t.setUTCDate(t.getUTCDate() - n); return t.toISOString().slice(0, 10); };

  await page.selectOption("#account", "acct-2");
  await page.selectOption("#range", "7d");
  await page.waitForFunction(() => !document.querySelector("#state [data-state=loading]"));
  assert.equal(await page.inputValue("#granularity"), "day", "a week is shown by day");
  let q = `account_id=acct-2&start_date=${minus(6)}&end_date=${today}`;
  let [m, c, d] = await Promise.all([apiData(`/api/analytics/messages?${q}&granularity=day`), apiData(`/api/analytics/chatbot?${q}`), apiData("/api/analytics/dashboard?account_id=acct-2&period=week")]);
  await page.waitForFunction((v) => document.querySelector('[data-metric="messages.total_sent"]')?.dataset.value === v, String(m.summary.total_sent));
  expectOverview(await shown(page), m, c, d);
  sameRows(await tableRows(page, "messages.timeline"), m.timeline, ["date", "sent", "received", "delivered", "read", "failed"]);
  assert.equal(m.timeline.length, 7);

  await page.selectOption("#granularity", "hour");
  m = await apiData(`/api/analytics/messages?${q}&granularity=hour`);
  await page.waitForFunction((n) => document.querySelectorAll('table[data-table="messages.timeline"] tbody tr').length === n, m.timeline.length);
  sameRows(await tableRows(page, "messages.timeline"), m.timeline, ["date", "sent", "received", "delivered", "read", "failed"]);

  await page.selectOption("#account", "");
  await page.selectOption("#range", "12m");
  assert.equal(await page.inputValue("#granularity"), "month", "a year is shown by month");
  const first = await page.evaluate(() => { const s = document.getElementById("range"); return s.value; });
  assert.equal(first, "12m");
  const start = (() => { const t = new Date(`${today}T00:00:00Z`); t.setUTCDate(1); t.setUTCMonth(t.getUTCMonth() - 11); return t.toISOString().slice(0, 10); })();
  q = `start_date=${start}&end_date=${today}`;
  [m, c, d] = await Promise.all([apiData(`/api/analytics/messages?${q}&granularity=month`), apiData(`/api/analytics/chatbot?${q}`), apiData("/api/analytics/dashboard?period=year")]);
  await page.waitForFunction((n) => document.querySelectorAll('table[data-table="messages.timeline"] tbody tr').length === n, m.timeline.length);
  expectOverview(await shown(page), m, c, d);
  sameRows(await tableRows(page, "messages.timeline"), m.timeline, ["date", "sent", "received", "delivered", "read", "failed"]);
  await page.context().close();
});

test("a range the tiers cannot serve shows the API's reason and the nearest servable choice", async () => {
  const page = await newPage(1440, { expectErrors: true });
  await signIn(page);
  await page.selectOption("#range", "12m");
  await page.waitForFunction(() => document.querySelectorAll('table[data-table="messages.timeline"] tbody tr').length > 0);
  // Hourly figures are kept for 30 days only.
  await page.selectOption("#granularity", "hour");
  const message = page.locator("[data-api-message]");
  await message.waitFor();
  assert.match(await message.textContent(), /cannot be served/);
  const suggestion = page.locator("[data-suggest]");
  await suggestion.waitFor();
  assert.equal(await suggestion.getAttribute("data-suggest"), "day");
  await suggestion.click();
  await page.locator('[data-metric="messages.total_sent"]').waitFor();
  assert.equal(await page.inputValue("#granularity"), "day");
  await page.context().close();
});

test("a CSV download equals its table's numbers", async (t) => {
  if (!/"name"\s*:\s*"format"/.test(openapi) && !openapi.includes("text/csv")) {
    t.skip("this server has no format=csv yet (GET /api/openapi.json does not describe it)");
    return;
  }
  const page = await newPage(1440);
  await signIn(page);
  await page.getByRole("tab", { name: "Messages" }).click();
  const cardEl = page.locator('[data-card="messages-timeline"]');
  const [download] = await Promise.all([page.waitForEvent("download"), cardEl.getByRole("button", { name: "Download CSV" }).click()]);
  const csv = readFileSync(await download.path(), "utf8").trim().split(/\r?\n/).map((l) => l.split(","));
  const [header, ...lines] = csv;
  const rows = await tableRows(page, "messages.timeline");
  assert.equal(lines.length, rows.length);
  lines.forEach((line, i) => header.forEach((k, j) => { if (k in rows[i]) assert.equal(line[j], rows[i][k], `line ${i} ${k}`); }));
  await page.context().close();
});

test("a new event shows within 2 s without a reload", async () => {
  const page = await newPage(1440);
  await signIn(page);
  const before = Number(await page.locator('[data-metric="messages.total_sent"]').getAttribute("data-value"));
  await page.evaluate(() => { window.__notReloaded = true; });
  const res = await fetch(`${base}/api/events`, {
    method: "POST", headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify([{ type: "message", account_id: "acct-1", timestamp: Math.floor(Date.now() / 1000) - 5, id: `live-${Date.now()}`, direction: "outbound", message_type: "text" }]),
  });
  assert.equal(res.status, 200);
  const started = Date.now();
  await page.waitForFunction((v) => document.querySelector('[data-metric="messages.total_sent"]')?.dataset.value === v, String(before + 1), { timeout: 2500 });
  assert.ok(Date.now() - started <= 2500);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page was not reloaded");
  assert.equal(await page.locator("#live").textContent(), "Live");
  await page.context().close();
});

test("a share path without a valid token shows the error state, and an organization's token cannot reach admin routes", async (t) => {
  // A token that is no key: the page shows its error state, never a sign-in form.
  const page = await newPage(1440, { expectErrors: true });
  await page.goto(`${base}/share/not-a-valid-token`);
  await page.locator("[data-state=error]").waitFor();
  assert.match(await page.locator("[data-state=error] h2").textContent(), /share link is not valid/);
  assert.equal(await page.locator("#sign-in").isVisible(), false);
  assert.equal(await page.locator("#sign-out").isVisible(), false);
  await page.context().close();
  for (const p of ["/api/admin/compact", "/api/admin/unrouted"]) {
    const res = await fetch(`${base}${p}`, { method: p.endsWith("compact") ? "POST" : "GET", headers: { Authorization: `Bearer ${key}` } });
    assert.equal(res.status, 401, `${p} refuses an organization's token`);
  }
  if (!openapi.includes("share")) {
    t.diagnostic("share links are not issued by this server yet: checked the page with an invalid token and the admin routes with an organization key only");
  }
});

test("a new organization is told how to send its first events", async () => {
  const res = await fetch(`${base}/api/admin/orgs`, { method: "POST", headers: { Authorization: `Bearer ${MASTER}`, "Content-Type": "application/json" }, body: JSON.stringify({ name: "Fresh Shop", timezone: "Europe/Berlin" }) });
  assert.equal(res.status, 201);
  const fresh = (await res.json()).data.api_key;
  const page = await newPage(375);
  await signIn(page, fresh);
  const empty = page.locator("[data-state=empty]");
  await empty.waitFor();
  assert.match(await empty.textContent(), /\/api\/events/);
  assert.match(await empty.textContent(), /\/webhooks\/whatsapp/);
  assert.equal(await page.locator('[data-metric="messages.total_sent"]').getAttribute("data-value"), "0");
  assert.equal(await page.locator("#org-name").textContent(), "Fresh Shop");
  await page.screenshot({ path: path.join(shots, "empty-375.png"), fullPage: true });
  await page.context().close();
});

test("at 375 px nothing scrolls sideways, and every view is screenshotted", async () => {
  const page = await newPage(375);
  await signIn(page);
  for (const tab of ["Overview", "Messages", "Chatbot"]) {
    await page.getByRole("tab", { name: tab }).click();
    await page.waitForTimeout(300);
    for (const d of await page.locator("details").all()) if (await d.isVisible()) await d.locator("summary").click();
    const width = await page.evaluate(() => document.scrollingElement.scrollWidth);
    assert.ok(width <= 375, `${tab}: the page is ${width} px wide at 375 px`);
    await page.screenshot({ path: path.join(shots, `${tab.toLowerCase()}-375.png`), fullPage: true });
  }
  await page.context().close();
});

test("the dark theme follows the system setting", async () => {
  const page = await newPage(1440, { colorScheme: "dark" });
  await signIn(page);
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bg, "rgb(18, 22, 28)");
  await page.getByRole("tab", { name: "Messages" }).click();
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(shots, "messages-dark-1440.png"), fullPage: true });
  await page.context().close();
});

test("the keyboard reaches every control, and tabs follow the arrow keys", async () => {
  const page = await newPage(1440);
  await signIn(page);
  await page.locator("#tab-overview").focus();
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.evaluate(() => document.activeElement.id), "tab-messages");
  assert.equal(await page.locator("#view-messages").isVisible(), true);
  const reached = new Set();
  await page.locator("body").focus();
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => document.activeElement.id));
  }
  for (const id of ["account", "range", "granularity"]) assert.ok(reached.has(id), `Tab reaches #${id}`);
  await page.context().close();
});

test("the first load is under 300 KB compressed and carries the page's policy", async () => {
  const page = await newPage(1440);
  const loaded = [];
  page.on("response", (r) => { if (r.url().startsWith(base) && !r.url().includes("/api/")) loaded.push(r.url()); });
  await page.goto(`${base}/`);
  await page.locator("#sign-in").waitFor();
  await page.context().close();
  assert.ok(loaded.length >= 4, `page and assets: ${loaded}`);
  let total = 0;
  for (const url of loaded) {
    const { bytes, headers } = await new Promise((resolve, reject) => {
      http.get(url, { headers: { "Accept-Encoding": "br, gzip" } }, (res) => {
        let n = 0;
        res.on("data", (c) => { n += c.length; });
        res.on("end", () => resolve({ bytes: n, headers: res.headers }));
      }).on("error", reject);
    });
    assert.equal(headers["content-security-policy"]?.startsWith("default-src 'self'"), true, `${url} has the policy`);
    assert.ok(headers.etag, `${url} has an ETag`);
    if (bytes > 1024) assert.ok(headers["content-encoding"], `${url} is compressed`);
    total += bytes;
  }
  assert.ok(total < 300 * 1024, `first load is ${total} bytes compressed`);
});

test("the embedded uPlot is the pinned npm package's file", () => {
  for (const f of ["uPlot.iife.min.js", "uPlot.min.css"]) {
    assert.equal(readFileSync(path.join(root, "dashboard/vendor", f), "utf8"), readFileSync(path.join(here, "node_modules/uplot/dist", f), "utf8"), `dashboard/vendor/${f} matches uplot in package-lock.json`);
  }
});

test("no console errors, and no request left 127.0.0.1", () => {
  assert.deepEqual(consoleErrors, []);
  const outside = requests.filter((u) => !u.startsWith(base) && !u.startsWith("data:") && !u.startsWith("blob:"));
  assert.deepEqual(outside, []);
  assert.ok(requests.length > 20, "the pages made their requests");
});
