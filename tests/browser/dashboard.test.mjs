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

let server, base, key, demoShare, browser, dir;
const requests = [];
const consoleErrors = [];
// Pages sending requests that are meant to be refused: the browser logs those refusals.
const probing = new Set();

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
      const link = out.match(/Dashboard:\s+(http:\/\/\S+?)\/?\s/);
      const shared = out.match(/Share link:\s+(http:\/\/\S+\/share\/wss_[0-9a-f]+)\s/);
      if (k && link && shared) { clearTimeout(timer); key = k[1]; base = link[1]; demoShare = shared[1]; resolve(); }
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
  page.on("console", (m) => { if (m.type() === "error" && !expectErrors && !probing.has(page)) consoleErrors.push(`${m.text()} (${page.url()})`); });
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

// The page's change badges, by metric name.
async function changes(page, scope = "body") {
  return page.locator(scope).evaluate((el) => Object.fromEntries([...el.querySelectorAll("[data-change]")]
    .map((e) => [e.dataset.change, e.dataset.value])));
}

// RFC 4180, as the API writes it: CRLF line ends, quoted cells with doubled quotes.
function parseCsv(text) {
  const rows = [];
  let row = [], cell = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (ch === '"') quoted = false; else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") { row.push(cell); cell = ""; }
    else if (ch === "\r") continue;
    else if (ch === "\n") { row.push(cell); rows.push(row); row = []; cell = ""; }
    else cell += ch;
  }
  if (cell || row.length) { row.push(cell); rows.push(row); }
  return rows;
}

async function download(page, card) {
  const [file] = await Promise.all([page.waitForEvent("download"),
    page.locator(`[data-card="${card}"]`).getByRole("button", { name: "Download CSV" }).click()]);
  return parseCsv(readFileSync(await file.path(), "utf8"));
}

// A CSV cell against the table's raw value: numbers as numbers (the CSV writes a float as
// the JSON does, 80.0, where the page's value reads 80), text as it is.
function sameCell(csv, shown, what) {
  const numeric = csv !== "" && shown !== "" && !Number.isNaN(Number(csv)) && !Number.isNaN(Number(shown));
  if (numeric) assert.equal(Number(csv), Number(shown), `${what}: CSV ${csv}, table ${shown}`);
  else assert.equal(csv, shown, what);
}

// A CSV download against the table the page shows: same header fields, same rows, same cells.
async function csvEqualsTable(page, card, table, keys) {
  const [header, ...lines] = await download(page, card);
  const rows = await tableRows(page, table);
  for (const k of keys) assert.ok(header.includes(k), `${card}: the CSV has a column ${k}: ${header}`);
  assert.equal(lines.length, rows.length, `${card}: as many CSV lines as table rows`);
  assert.ok(rows.length > 0, `${card}: the table has rows`);
  lines.forEach((line, i) => keys.forEach((k) => sameCell(line[header.indexOf(k)], rows[i][k], `${card} line ${i} ${k}`)));
  return lines.length;
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
  const [m, c, d] = await Promise.all([apiData("/api/analytics/messages"), apiData("/api/analytics/chatbot?granularity=day"), apiData("/api/analytics/dashboard")]);
  expectOverview(await shown(page), m, c, d);
  assert.equal(await page.locator("[data-change]").count(), 0, "compare is off by default");
  assert.equal(await page.locator("#org-name").textContent(), "Demo Store");
  assert.match(await page.locator("#org-tz").textContent(), /Asia\/Kolkata/);
  assert.match(await page.locator('[data-metric="messages.total_sent"]').textContent(), /^\d{1,3}(,\d{3})+$/, "thousands separators");
  assert.match(await page.locator('[data-metric="messages.delivery_rate"]').textContent(), /^\d+(\.\d)? %$/);
  await page.getByRole("tab", { name: "Messages" }).click();
  sameRows(await tableRows(page, "messages.timeline"), m.timeline, ["date", "sent", "received", "delivered", "read", "failed"]);
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(shots, "messages-1440.png"), fullPage: true });
  sameRows(await tableRows(page, "messages.by_error"), m.by_error, ["error_code", "title", "count"]);
  sameRows(await tableRows(page, "messages.funnel"), [
    { step: "Sent", count: m.summary.total_sent, rate: null },
    { step: "Delivered", count: m.summary.total_delivered, rate: m.summary.delivery_rate },
    { step: "Read", count: m.summary.total_read, rate: m.summary.read_rate }], ["step", "count", "rate"]);
  await page.getByRole("tab", { name: "Chatbot" }).click();
  sameRows(await tableRows(page, "chatbot.timeline"), c.timeline, ["date", "conversations", "auto_resolved", "transferred", "abandoned"]);
  sameRows(await tableRows(page, "chatbot.ai_timeline"), c.timeline, ["date", "ai_requests", "ai_tokens", "ai_cost"]);
  sameRows(await tableRows(page, "chatbot.by_flow"), c.by_flow, ["flow_name", "conversations", "completed", "completion_rate"]);
  assert.equal(await page.locator("#chart-outcomes canvas").count(), 1, "conversations by outcome are drawn");
  assert.equal(await page.locator("#chart-ai canvas").count(), 1, "AI usage is drawn");
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
  let [m, c, d] = await Promise.all([apiData(`/api/analytics/messages?${q}&granularity=day`), apiData(`/api/analytics/chatbot?${q}&granularity=day`), apiData("/api/analytics/dashboard?account_id=acct-2&period=week")]);
  await page.waitForFunction((v) => document.querySelector('[data-metric="messages.total_sent"]')?.dataset.value === v, String(m.summary.total_sent));
  expectOverview(await shown(page), m, c, d);
  sameRows(await tableRows(page, "messages.timeline"), m.timeline, ["date", "sent", "received", "delivered", "read", "failed"]);
  assert.equal(m.timeline.length, 7);

  await page.selectOption("#granularity", "hour");
  m = await apiData(`/api/analytics/messages?${q}&granularity=hour`);
  c = await apiData(`/api/analytics/chatbot?${q}&granularity=hour`);
  await page.waitForFunction((n) => document.querySelectorAll('table[data-table="chatbot.timeline"] tbody tr').length === n, c.timeline.length);
  sameRows(await tableRows(page, "chatbot.timeline"), c.timeline, ["date", "conversations", "auto_resolved", "transferred", "abandoned"]);
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
  const today = await page.evaluate(() => new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Kolkata" }).format(new Date()));
  const start = (() => { const t = new Date(`${today}T00:00:00Z`); t.setUTCDate(1); t.setUTCMonth(t.getUTCMonth() - 11); return t.toISOString().slice(0, 10); })();
  const refused = await apiGet(`/api/analytics/messages?start_date=${start}&end_date=${today}&granularity=hour`);
  assert.equal(refused.status, 400);
  assert.equal(refused.body.code, "range_not_servable");
  assert.equal(await message.textContent(), refused.body.message, "the API's own reason");
  assert.equal(await page.locator("[data-state=error] h2").textContent(), "This range cannot be shown as asked");
  await page.screenshot({ path: path.join(shots, "range-not-servable-1440.png"), fullPage: false });
  await suggestion.click();
  await page.locator('[data-metric="messages.total_sent"]').waitFor();
  assert.equal(await page.inputValue("#granularity"), "day");
  const m = await apiData(`/api/analytics/messages?start_date=${start}&end_date=${today}&granularity=day`);
  assert.equal(await page.locator('[data-metric="messages.total_sent"]').getAttribute("data-value"), String(m.summary.total_sent));

  // Custom dates from before the daily figures: by day they cannot be served; the nearest
  // choice is the same end from the first of that month, by month.
  const old = `${Number(today.slice(0, 4)) - 2}${today.slice(4, 8)}15`;
  await page.selectOption("#range", "custom");
  await page.fill("#start", old);
  await page.fill("#end", today);
  await page.selectOption("#granularity", "day");
  await page.locator("[data-suggest]").waitFor();
  const wide = `${old.slice(0, 8)}01`;
  const apiMessage = (await apiGet(`/api/analytics/messages?start_date=${old}&end_date=${today}&granularity=day`)).body.message;
  assert.equal(await page.locator("[data-api-message]").textContent(), apiMessage);
  assert.equal(await page.locator("[data-suggest]").getAttribute("data-suggest-start"), wide);
  assert.equal(await page.locator("[data-suggest]").getAttribute("data-suggest"), "month");
  await page.locator("[data-suggest]").click();
  const byMonth = await apiData(`/api/analytics/messages?start_date=${wide}&end_date=${today}&granularity=month`);
  await page.waitForFunction((n) => document.querySelectorAll('table[data-table="messages.timeline"] tbody tr').length === n, byMonth.timeline.length);
  assert.equal(await page.inputValue("#start"), wide);
  assert.equal(await page.inputValue("#granularity"), "month");
  sameRows(await tableRows(page, "messages.timeline"), byMonth.timeline, ["date", "sent", "received", "delivered", "read", "failed"]);
  await page.context().close();
});

test("a CSV download equals its chart's or table's numbers", async () => {
  const page = await newPage(1440);
  await signIn(page);
  await page.getByRole("tab", { name: "Messages" }).click();
  const days = await csvEqualsTable(page, "messages-timeline", "messages.timeline", ["date", "sent", "received", "delivered", "read", "failed"]);
  assert.equal(days, 30, "the last 30 days by day");
  const reasons = await csvEqualsTable(page, "messages-errors", "messages.by_error", ["error_code", "title", "count"]);
  const m = await apiData("/api/analytics/messages");
  assert.equal(reasons, m.by_error.length);
  assert.equal(await page.locator('[data-card="messages-errors"] .bar-label').first().textContent(), `${m.by_error[0].title} (${m.by_error[0].error_code})`, "failure reasons carry their titles");
  await page.getByRole("tab", { name: "Chatbot" }).click();
  await csvEqualsTable(page, "chatbot-flows", "chatbot.by_flow", ["flow_name", "conversations", "completed", "completion_rate"]);
  await csvEqualsTable(page, "chatbot-outcomes", "chatbot.timeline", ["date", "conversations", "auto_resolved", "transferred", "abandoned"]);
  await csvEqualsTable(page, "chatbot-ai", "chatbot.ai_timeline", ["date", "ai_requests", "ai_tokens", "ai_cost"]);
  // After changing account and granularity, the download follows what is shown.
  await page.selectOption("#account", "acct-3");
  await page.selectOption("#range", "7d");
  await page.selectOption("#granularity", "hour");
  await page.waitForFunction(() => document.querySelectorAll('table[data-table="chatbot.timeline"] tbody tr').length > 100);
  const hours = await csvEqualsTable(page, "chatbot-outcomes", "chatbot.timeline", ["date", "conversations", "auto_resolved", "transferred", "abandoned"]);
  assert.ok(hours >= 6 * 24 && hours <= 7 * 24, `${hours} hours in the last 7 days`);
  await page.context().close();
});

test("compare on shows every summary figure's change as the API gives it", async () => {
  const page = await newPage(1440);
  await signIn(page);
  await page.selectOption("#range", "7d");
  await page.check("#compare");
  await page.locator('[data-change="messages.total_sent"]').waitFor();
  const today = await page.evaluate(() => new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Kolkata" }).format(new Date()));
  const t = new Date(`${today}T00:00:00Z`); t.setUTCDate(t.getUTCDate() - 6);
  const q = `start_date=${t.toISOString().slice(0, 10)}&end_date=${today}&compare=previous`;
  const [m, c, d] = await Promise.all([apiData(`/api/analytics/messages?${q}&granularity=day`), apiData(`/api/analytics/chatbot?${q}&granularity=day`), apiData("/api/analytics/dashboard?period=week&compare=previous")]);
  expectOverview(await shown(page), m, c, d);
  const got = await changes(page);
  const want = {};
  for (const [k, v] of Object.entries(m.change)) want[`messages.${k}`] = v;
  for (const k of ["total_conversations", "auto_resolved", "transferred_to_agent", "abandoned", "resolution_rate", "avg_messages_per_conversation", "avg_resolution_time_seconds"]) want[`chatbot.${k}`] = c.change[k];
  want["chatbot.summary.resolution_rate"] = c.change.resolution_rate;
  for (const [section, figures] of Object.entries(d.change)) {
    for (const [k, v] of Object.entries(figures)) {
      const metric = section === "messages" && k !== "today" ? null : `dashboard.${section}.${k}`;
      if (metric && metric in got) want[metric] = v;
    }
  }
  assert.ok(Object.keys(want).length >= 20, "the figures compared");
  let numbers = 0;
  for (const [metric, v] of Object.entries(want)) {
    assert.equal(got[metric], v == null ? "" : String(v), `${metric}: the page shows a change of ${got[metric]}, the API ${v}`);
    if (v != null) numbers += 1;
  }
  assert.ok(numbers >= 15, "the seeded week has a previous week to compare with");
  const sent = page.locator('[data-change="messages.total_sent"]');
  assert.match(await sent.textContent(), /^[▲▼■] [+−]?\d+(\.\d+)? %/);
  assert.match(await sent.getAttribute("title"), /previous period: \d/);
  assert.match(await page.locator('[data-card="ov-messages"] .note').textContent(), /Compared with \d{4}-\d{2}-\d{2}/);
  await page.waitForTimeout(300);
  // docs/dashboard.png is this picture.
  await page.screenshot({ path: path.join(shots, "overview-compare-1440.png"), fullPage: true });
  // Off again: no change is shown.
  await page.uncheck("#compare");
  await page.waitForFunction(() => !document.querySelector("[data-change]"));
  await page.context().close();
});

// ---------- campaigns, templates, costs ----------

// The page's default range (the last 30 days in the organization's zone) as query parameters.
async function last30(page) {
  const today = await page.evaluate(() => new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Kolkata" }).format(new Date()));
  const t = new Date(`${today}T00:00:00Z`); t.setUTCDate(t.getUTCDate() - 29);
  return { start: t.toISOString().slice(0, 10), end: today, qs: `start_date=${t.toISOString().slice(0, 10)}&end_date=${today}` };
}

// Opens a tab and waits until its figures are drawn (not the view's loading placeholder).
async function openView(page, tab) {
  await page.getByRole("tab", { name: tab }).click();
  await page.waitForFunction((id) => {
    const v = document.getElementById(id);
    return v && !v.hidden && v.children.length > 0 && !v.querySelector("[data-state=view-loading]");
  }, `view-${tab.toLowerCase()}`);
}

// Money as the page writes it: cents, four decimals below one cent or for a unit price.
function moneyText(v, currency = "USD", unit = false) {
  const digits = v !== 0 && (unit || Math.abs(v) < 0.01) ? 4 : 2;
  return new Intl.NumberFormat("en-US", { style: "currency", currency, minimumFractionDigits: 2, maximumFractionDigits: digits }).format(v);
}

// A CSV download of a card: the URL the page asked for and the parsed file.
async function csvOf(page, card) {
  const [request, rows] = await Promise.all([
    page.waitForRequest((r) => r.url().includes("format=csv")),
    download(page, card),
  ]);
  return { url: new URL(request.url()), header: rows[0], lines: rows.slice(1) };
}

// A downloaded CSV against the table the page shows, cell by cell.
function csvSameAsTable({ header, lines }, rows, keys, what) {
  for (const k of keys) assert.ok(header.includes(k), `${what}: the CSV has a column ${k}: ${header}`);
  assert.equal(lines.length, rows.length, `${what}: as many CSV lines as table rows`);
  lines.forEach((line, i) => keys.forEach((k) => sameCell(line[header.indexOf(k)], rows[i][k], `${what} line ${i} ${k}`)));
}

test("the campaigns view shows each campaign's funnel, status and cost as the API gives them", async () => {
  const page = await newPage(1280);
  const asked = [];
  page.on("request", (r) => { if (r.url().includes("/api/analytics/campaigns")) asked.push(new URL(r.url())); });
  await signIn(page);
  // Compare is on for the other views: the campaigns route takes neither it nor a granularity.
  await page.check("#compare");
  await page.locator('[data-change="messages.total_sent"]').waitFor();
  await openView(page, "Campaigns");
  const r = await last30(page);
  const api = await apiData(`/api/analytics/campaigns?${r.qs}`);
  assert.ok(api.campaigns.length >= 3, "the demo has campaigns in the last 30 days");
  assert.equal(api.currency, "USD");
  const keys = ["campaign_id", "status", "sent", "delivered", "read", "replied", "failed", "estimated_cost"];
  sameRows(await tableRows(page, "campaigns.campaigns"), api.campaigns, keys);
  const values = await shown(page, "#view-campaigns");
  for (const c of api.campaigns) {
    for (const k of ["delivery_rate", "read_rate", "reply_rate", "estimated_cost", "sent", "delivered", "read", "replied", "failed"]) {
      assert.equal(values[`campaigns.${c.campaign_id}.${k}`], String(c[k]), `${c.campaign_id} ${k}`);
    }
  }
  const first = api.campaigns[0];
  const row = page.locator('table[data-table="campaigns.campaigns"] tbody tr').first();
  assert.equal(await row.locator('[data-key="estimated_cost"]').textContent(), moneyText(first.estimated_cost));
  assert.equal(await row.locator('[data-key="status"] .badge').textContent(), { completed: "Completed", running: "Running", unknown: "Unknown", created: "Created", scheduled: "Scheduled", cancelled: "Cancelled", failed: "Failed" }[first.status]);
  assert.match(await row.locator('[data-key="delivered"]').textContent(), new RegExp(`^${first.delivered.toLocaleString("en-US")}${first.delivery_rate.toFixed(1)} %`));
  assert.equal(await page.locator('table[data-table="campaigns.campaigns"] th[aria-sort="descending"]').textContent(), "Sent ▼");
  const sent = api.campaigns.map((c) => c.sent);
  assert.deepEqual(sent, [...sent].sort((a, b) => b - a), "most sent first");
  // Every campaign's failure reasons, in the order the API gives them.
  const reasons = api.campaigns.flatMap((c) => c.by_error.map((e) => ({ campaign_id: c.campaign_id, ...e })));
  assert.ok(reasons.length > 0);
  sameRows(await tableRows(page, "campaigns.by_error"), reasons, ["campaign_id", "error_code", "title", "count"]);

  const csv = await csvOf(page, "campaigns-list");
  assert.equal(csv.url.pathname, "/api/analytics/campaigns");
  assert.deepEqual(Object.fromEntries(csv.url.searchParams), { start_date: r.start, end_date: r.end, format: "csv", table: "campaigns" });
  csvSameAsTable(csv, await tableRows(page, "campaigns.campaigns"), keys, "campaigns");
  for (const u of asked) {
    assert.equal(u.searchParams.has("granularity"), false, `${u}`);
    assert.equal(u.searchParams.has("compare"), false, `${u}`);
  }
  assert.ok(asked.length >= 2, "the view and its CSV asked the campaigns route");
  assert.equal(await page.locator("#compare").isDisabled(), true, "compare has no use here");
  assert.equal(await page.locator("#granularity").isDisabled(), true, "nor has granularity");

  // Another account: that account's campaigns only.
  await page.selectOption("#account", "acct-2");
  const two = await apiData(`/api/analytics/campaigns?account_id=acct-2&${r.qs}`);
  await page.waitForFunction((n) => document.querySelectorAll('table[data-table="campaigns.campaigns"] tbody tr').length === n
    && [...document.querySelectorAll('table[data-table="campaigns.campaigns"] tbody th')].every((t) => t.dataset.value.startsWith("acct-2")), two.campaigns.length);
  sameRows(await tableRows(page, "campaigns.campaigns"), two.campaigns, keys);
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(shots, "campaigns-1280.png"), fullPage: true });
  await page.getByRole("tab", { name: "Overview" }).click();
  assert.equal(await page.locator("#compare").isDisabled(), false, "compare is back on the overview");
  await page.context().close();
});

test("the templates view lists the API's templates and draws the chosen one's timeline", async () => {
  const page = await newPage(1280);
  await signIn(page);
  await openView(page, "Templates");
  const r = await last30(page);
  const api = await apiData(`/api/analytics/templates?${r.qs}`);
  assert.ok(api.templates.length >= 3, "the demo sends templates");
  const keys = ["template_name", "template_language", "category", "sent", "delivered", "read", "replied", "failed", "estimated_cost"];
  sameRows(await tableRows(page, "templates.templates"), api.templates, keys);
  const values = await shown(page, "#view-templates");
  for (const t of api.templates) {
    const m = `templates.${t.template_name}/${t.template_language}/${t.category}`;
    for (const k of ["delivery_rate", "read_rate", "reply_rate", "estimated_cost"]) assert.equal(values[`${m}.${k}`], String(t[k]), `${m} ${k}`);
  }
  // The most sent template is drawn first.
  const top = api.templates[0].template_name;
  const ofTop = await apiData(`/api/analytics/templates?${r.qs}&template=${encodeURIComponent(top)}&granularity=day`);
  sameRows(await tableRows(page, "templates.timeline"), ofTop.timeline, ["date", "sent", "delivered", "read", "failed", "replied", "estimated_cost"]);
  assert.equal(await page.inputValue("#template-pick"), top);
  assert.equal(await page.locator("#chart-template canvas").count(), 1, "the template's timeline is drawn");
  assert.equal(await page.locator("#chart-template-cost canvas").count(), 1, "and its cost");

  // Another template, by keyboard from its row: its timeline, and the focus stays on it.
  const other = api.templates.find((t) => t.template_name !== top).template_name;
  const asked = page.waitForRequest((q) => q.url().includes("/api/analytics/templates") && new URL(q.url()).searchParams.get("template") === other);
  const button = page.locator(`button[data-template="${other}"]`).first();
  await button.focus();
  await page.keyboard.press("Enter");
  const req = new URL((await asked).url());
  assert.equal(req.searchParams.get("granularity"), "day");
  const ofOther = await apiData(`/api/analytics/templates?${r.qs}&template=${encodeURIComponent(other)}&granularity=day`);
  await page.waitForFunction((n) => document.getElementById("template-pick")?.value === n, other);
  sameRows(await tableRows(page, "templates.timeline"), ofOther.timeline, ["date", "sent", "delivered", "read", "failed", "replied", "estimated_cost"]);
  assert.equal(ofOther.timeline.length, 30, "by day over 30 days");
  assert.equal(await page.evaluate(() => document.activeElement.dataset.template), other, "the focus stays on the chosen row");
  assert.equal(await page.locator(`button[data-template="${other}"]`).first().getAttribute("aria-pressed"), "true");
  assert.match(await page.locator('[data-card="templates-timeline"] h3').textContent(), new RegExp(`^${other} over time$`));

  const timeline = await csvOf(page, "templates-timeline");
  assert.deepEqual(Object.fromEntries(timeline.url.searchParams), { start_date: r.start, end_date: r.end, granularity: "day", template: other, format: "csv", table: "timeline" });
  csvSameAsTable(timeline, await tableRows(page, "templates.timeline"), ["date", "sent", "delivered", "read", "failed", "replied", "estimated_cost"], "template timeline");
  const list = await csvOf(page, "templates-list");
  assert.equal(list.url.searchParams.get("table"), "templates");
  assert.equal(list.url.searchParams.has("template"), false, "the whole list");
  csvSameAsTable(list, await tableRows(page, "templates.templates"), keys, "templates");

  // The list picks as well; by week the timeline follows the header's granularity.
  await page.selectOption("#template-pick", top);
  await page.waitForFunction((n) => document.querySelector(`button[data-template="${n}"]`)?.getAttribute("aria-pressed") === "true", top);
  await page.selectOption("#granularity", "week");
  const byWeek = await apiData(`/api/analytics/templates?${r.qs}&template=${encodeURIComponent(top)}&granularity=week`);
  await page.waitForFunction((n) => document.querySelectorAll('table[data-table="templates.timeline"] tbody tr').length === n, byWeek.timeline.length);
  sameRows(await tableRows(page, "templates.timeline"), byWeek.timeline, ["date", "sent", "delivered", "read", "failed", "replied", "estimated_cost"]);
  await page.selectOption("#granularity", "day");
  await page.waitForFunction(() => document.querySelectorAll('table[data-table="templates.timeline"] tbody tr').length === 30);
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(shots, "templates-1280.png"), fullPage: true });
  await page.context().close();
});

test("the costs view shows the API's spend, its timeline and the tables by category and country", async () => {
  const page = await newPage(1280);
  await signIn(page);
  await openView(page, "Costs");
  const r = await last30(page);
  const api = await apiData(`/api/analytics/costs?${r.qs}&granularity=day`);
  const s = api.summary;
  assert.equal(s.currency, "USD");
  assert.ok(s.estimated_cost > 0 && s.billable_messages > 0 && s.free_messages > 0, "the demo is priced by the example rate card");
  const values = await shown(page, "#view-costs");
  for (const k of Object.keys(s).filter((x) => x !== "currency")) assert.equal(values[`costs.summary.${k}`], String(s[k]), `summary ${k}`);
  const text = async (m) => page.locator(`[data-metric="costs.summary.${m}"]`).textContent();
  assert.equal(await text("estimated_cost"), moneyText(s.estimated_cost));
  assert.equal(await text("total_cost"), moneyText(s.total_cost));
  assert.equal(await text("ai_cost"), moneyText(s.ai_cost));
  assert.equal(await text("cost_per_delivered"), moneyText(s.cost_per_delivered, "USD", true));
  assert.match(await text("cost_per_read"), /^\$0\.\d{4}$/, "a price per message has its four decimals");
  assert.equal(await text("billable_messages"), s.billable_messages.toLocaleString("en-US"));
  assert.match(await page.locator("[data-hint=rate-card]").textContent(), /--rate-card/);

  sameRows(await tableRows(page, "costs.timeline"), api.timeline, ["date", "billable_messages", "free_messages", "estimated_cost", "ai_cost", "total_cost"]);
  sameRows(await tableRows(page, "costs.by_category"), api.by_category, ["category", "pricing_type", "messages", "estimated_cost"]);
  sameRows(await tableRows(page, "costs.by_country"), api.by_country, ["country", "billable_messages", "free_messages", "estimated_cost"]);
  assert.equal(await page.locator("#chart-costs canvas").count(), 1, "the estimated cost is drawn");
  const de = api.by_country.find((c) => c.country === "DE");
  assert.ok(de, "the demo has German recipients");
  assert.equal(await page.locator('table[data-table="costs.by_country"] [data-value="DE"]').textContent(), "Germany (DE)");

  for (const [card, table, keys] of [
    ["costs-timeline", "costs.timeline", ["date", "billable_messages", "free_messages", "estimated_cost", "ai_cost", "total_cost"]],
    ["costs-categories", "costs.by_category", ["category", "pricing_type", "messages", "estimated_cost"]],
    ["costs-countries", "costs.by_country", ["country", "billable_messages", "free_messages", "estimated_cost"]]]) {
    const csv = await csvOf(page, card);
    assert.deepEqual(Object.fromEntries(csv.url.searchParams), { start_date: r.start, end_date: r.end, granularity: "day", format: "csv", table: table.split(".")[1] }, card);
    csvSameAsTable(csv, await tableRows(page, table), keys, card);
  }

  // One account, by week.
  await page.selectOption("#account", "acct-3");
  await page.selectOption("#granularity", "week");
  const three = await apiData(`/api/analytics/costs?account_id=acct-3&${r.qs}&granularity=week`);
  await page.waitForFunction((v) => document.querySelector('[data-metric="costs.summary.estimated_cost"]')?.dataset.value === v
    && document.querySelectorAll('table[data-table="costs.timeline"] tbody tr').length < 10, String(three.summary.estimated_cost));
  const after = await shown(page, "#view-costs");
  for (const k of ["estimated_cost", "billable_messages", "free_messages", "ai_cost", "total_cost"]) assert.equal(after[`costs.summary.${k}`], String(three.summary[k]), `acct-3 ${k}`);
  sameRows(await tableRows(page, "costs.timeline"), three.timeline, ["date", "billable_messages", "free_messages", "estimated_cost", "ai_cost", "total_cost"]);
  assert.ok(three.summary.estimated_cost < s.estimated_cost, "one account spends less than all three");
  await page.selectOption("#account", "");
  await page.selectOption("#granularity", "day");
  await page.waitForFunction((v) => document.querySelector('[data-metric="costs.summary.estimated_cost"]')?.dataset.value === v, String(s.estimated_cost));
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(shots, "costs-1280.png"), fullPage: true });
  await page.context().close();
});

test("without campaign, template or priced messages the new views say so", async () => {
  const res = await fetch(`${base}/api/admin/orgs`, { method: "POST", headers: { Authorization: `Bearer ${MASTER}`, "Content-Type": "application/json" }, body: JSON.stringify({ name: "Quiet Shop", timezone: "Asia/Kolkata" }) });
  assert.equal(res.status, 201);
  const quiet = (await res.json()).data.api_key;
  // One plain text message: figures exist, but no campaign, template or price.
  const sent = await fetch(`${base}/api/events`, {
    method: "POST", headers: { Authorization: `Bearer ${quiet}`, "Content-Type": "application/json" },
    body: JSON.stringify([{ type: "message", account_id: "acct-q", timestamp: Math.floor(Date.now() / 1000) - 60, id: "quiet-1", direction: "outbound", message_type: "text" }]),
  });
  assert.equal(sent.status, 200);
  const page = await newPage(375);
  await signIn(page, quiet);
  const r = await last30(page);
  assert.deepEqual((await apiData(`/api/analytics/campaigns?${r.qs}`, quiet)).campaigns, []);
  assert.deepEqual((await apiData(`/api/analytics/templates?${r.qs}`, quiet)).templates, []);
  await openView(page, "Campaigns");
  assert.equal(await page.locator("[data-empty=campaigns]").textContent(), "No campaign messages in this range.");
  assert.equal(await page.locator('table[data-table="campaigns.campaigns"]').count(), 0);
  const csv = await csvOf(page, "campaigns-list");
  assert.equal(csv.lines.length, 0, "the CSV has its header only");
  assert.ok(csv.header.includes("campaign_id"));
  await page.screenshot({ path: path.join(shots, "campaigns-empty-375.png"), fullPage: true });
  await openView(page, "Templates");
  assert.equal(await page.locator("[data-empty=templates]").textContent(), "No template messages in this range.");
  assert.equal(await page.locator("#template-pick").count(), 0, "nothing to pick");
  await openView(page, "Costs");
  const c = await apiData(`/api/analytics/costs?${r.qs}&granularity=day`, quiet);
  const values = await shown(page, "#view-costs");
  assert.equal(values["costs.summary.estimated_cost"], String(c.summary.estimated_cost));
  assert.equal(values["costs.summary.estimated_cost"], "0");
  assert.equal(await page.locator('[data-metric="costs.summary.estimated_cost"]').textContent(), "$0.00");
  assert.equal(await page.locator("[data-empty=by_category]").textContent(), "No priced messages in this range.");
  assert.equal(await page.locator("[data-empty=by_country]").textContent(), "No priced messages in this range.");
  assert.equal(await page.evaluate(() => document.scrollingElement.scrollWidth) <= 375, true);
  await page.context().close();
});

test("a new event shows within 2 s without a reload, through the stream", async () => {
  const page = await newPage(1440);
  const seen = [];
  page.on("request", (r) => seen.push(r.url()));
  await signIn(page);
  const before = Number(await page.locator('[data-metric="messages.total_sent"]').getAttribute("data-value"));
  await page.evaluate(() => { window.__notReloaded = true; });
  // The page follows the stream (not polling) once it is connected.
  const deadline = Date.now() + 5000;
  while (!seen.some((u) => u.endsWith("/api/stream")) && Date.now() < deadline) await page.waitForTimeout(50);
  assert.ok(seen.some((u) => u.endsWith("/api/stream")), "the page opened the stream");
  const askedBefore = seen.filter((u) => u.includes("/api/analytics/messages")).length;
  await page.waitForTimeout(2500);
  assert.equal(seen.filter((u) => u.includes("/api/analytics/messages")).length, askedBefore, "no polling while the stream is up");
  const res = await fetch(`${base}/api/events`, {
    method: "POST", headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify([{ type: "message", account_id: "acct-1", timestamp: Math.floor(Date.now() / 1000) - 5, id: `live-${Date.now()}`, direction: "outbound", message_type: "text" }]),
  });
  assert.equal(res.status, 200);
  const started = Date.now();
  await page.waitForFunction((v) => document.querySelector('[data-metric="messages.total_sent"]')?.dataset.value === v, String(before + 1), { timeout: 2000 });
  assert.ok(Date.now() - started <= 2000);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page was not reloaded");
  assert.equal(await page.locator("#live").textContent(), "Live");
  await page.context().close();
});

test("while the stream is refused, the page asks again every 2 s and still follows new events", async () => {
  // The browser logs the refused stream as a failed resource: expected here.
  const page = await newPage(1440, { expectErrors: true });
  let refused = 0;
  await page.route("**/api/stream", (route) => { refused += 1; return route.fulfill({ status: 503, contentType: "application/json", body: '{"status":"error","code":"unavailable","message":"test"}' }); });
  await signIn(page);
  await page.waitForFunction(() => /every 2 s/.test(document.getElementById("live").title));
  const before = Number(await page.locator('[data-metric="messages.total_sent"]').getAttribute("data-value"));
  const res = await fetch(`${base}/api/events`, {
    method: "POST", headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify([{ type: "message", account_id: "acct-3", timestamp: Math.floor(Date.now() / 1000) - 5, id: `poll-${Date.now()}`, direction: "outbound", message_type: "text" }]),
  });
  assert.equal(res.status, 200);
  await page.waitForFunction((v) => Number(document.querySelector('[data-metric="messages.total_sent"]')?.dataset.value) >= v, before + 1, { timeout: 3000 });
  assert.ok(refused >= 1, "the page tried the stream");
  // The stream back: the page returns to it and stops polling.
  await page.unroute("**/api/stream");
  await page.waitForFunction(() => !/every 2 s/.test(document.getElementById("live").title), null, { timeout: 10000 });
  await page.context().close();
});

test("a share link shows only its account's figures and cannot reach admin routes or other accounts", async () => {
  const res = await fetch(`${base}/api/share-links`, {
    method: "POST", headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "Second number's manager", accounts: ["acct-2"] }),
  });
  assert.equal(res.status, 201);
  const link = (await res.json()).data;
  assert.equal(link.url, `/share/${link.token}`);
  for (const width of [1440, 375]) {
    const page = await newPage(width);
    await page.goto(`${base}${link.url}`);
    await page.locator('[data-metric="messages.total_sent"]').waitFor();
    // Signed in by the link: no sign-in form, no sign-out.
    assert.equal(await page.locator("#sign-in").isVisible(), false);
    assert.equal(await page.locator("#sign-out").isVisible(), false);
    assert.match(await page.locator("#org-tz").textContent(), /read-only/);
    assert.deepEqual(await page.locator("#account option").evaluateAll((os) => os.map((o) => o.value)), ["", "acct-2"]);
    const [m, c, d] = await Promise.all([apiData("/api/analytics/messages?account_id=acct-2"), apiData("/api/analytics/chatbot?account_id=acct-2"), apiData("/api/analytics/dashboard?account_id=acct-2&period=month")]);
    expectOverview(await shown(page), m, c, d);
    const all = await apiData("/api/analytics/messages");
    assert.ok(all.summary.total_sent > m.summary.total_sent, "the organization has more than the shared account");

    // From inside the page's origin, with the page's own token.
    probing.add(page);
    const answers = await page.evaluate(async (token) => {
      const auth = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
      const ask = async (method, url, body) => {
        const r = await fetch(url, { method, headers: auth, body: body && JSON.stringify(body) });
        return [r.status, (await r.json()).code ?? null];
      };
      return {
        keys: await ask("GET", "/api/keys"),
        shareLinks: await ask("GET", "/api/share-links"),
        newAccount: await ask("POST", "/api/accounts", { account_id: "acct-9", name: "Not allowed" }),
        events: await ask("POST", "/api/events", [{ type: "message", account_id: "acct-2", timestamp: Math.floor(Date.now() / 1000), id: "from-share", direction: "outbound", message_type: "text" }]),
        otherAccount: await ask("GET", "/api/analytics/messages?account_id=acct-1"),
        otherChatbot: await ask("GET", "/api/analytics/chatbot?account_id=acct-1"),
        ownAccount: await ask("GET", "/api/analytics/messages?account_id=acct-2"),
      };
    }, link.token);
    probing.delete(page);
    for (const k of ["keys", "shareLinks", "newAccount", "events"]) assert.deepEqual(answers[k], [403, "insufficient_scope"], `${k}: ${answers[k]}`);
    assert.equal(answers.otherAccount[0], 404);
    assert.equal(answers.otherChatbot[0], 404);
    assert.equal(answers.ownAccount[0], 200);
    for (const tab of ["Overview", "Messages", "Chatbot", "Campaigns", "Templates", "Costs"]) {
      await openView(page, tab);
      await page.waitForTimeout(300);
      if (width === 375) assert.ok(await page.evaluate(() => document.scrollingElement.scrollWidth) <= 375, `${tab} of the share view fits 375 px`);
      await page.screenshot({ path: path.join(shots, `share-${tab.toLowerCase()}-${width}.png`), fullPage: true });
    }
    // The spend views read the link's account too.
    const campaigns = await apiData("/api/analytics/campaigns?account_id=acct-2");
    await openView(page, "Campaigns");
    assert.ok(campaigns.campaigns.length > 0);
    sameRows(await tableRows(page, "campaigns.campaigns"), campaigns.campaigns, ["campaign_id", "sent", "estimated_cost"]);
    await page.context().close();
  }
  const m = await apiData("/api/analytics/messages?account_id=acct-2");
  assert.deepEqual((await apiData("/api/analytics/messages", link.token)).summary, m.summary, "the link reads its account's sums");
});

test("the share link serve --demo prints opens the organization's figures, read-only", async () => {
  assert.ok(demoShare.startsWith(`${base}/share/wss_`), demoShare);
  const page = await newPage(1440);
  await page.goto(demoShare);
  await page.locator('[data-metric="messages.total_sent"]').waitFor();
  assert.equal(await page.locator("#sign-out").isVisible(), false);
  assert.deepEqual(await page.locator("#account option").evaluateAll((os) => os.map((o) => o.value)), ["", "acct-1", "acct-2", "acct-3"]);
  const [m, c, d] = await Promise.all([apiData("/api/analytics/messages"), apiData("/api/analytics/chatbot"), apiData("/api/analytics/dashboard")]);
  expectOverview(await shown(page), m, c, d);
  await page.context().close();
});

test("a share path without a live link is a 404 page, and an organization's key cannot reach the operator's routes", async () => {
  const page = await newPage(1440, { expectErrors: true });
  const res = await page.goto(`${base}/share/wss_not-a-valid-token`);
  assert.equal(res.status(), 404);
  assert.match(await page.locator("body").textContent(), /share link does not exist, was deleted or has expired/);
  assert.equal(await page.locator("#sign-in").count(), 0, "no sign-in form");
  await page.context().close();
  for (const p of ["/api/admin/compact", "/api/admin/unrouted"]) {
    const r = await fetch(`${base}${p}`, { method: p.endsWith("compact") ? "POST" : "GET", headers: { Authorization: `Bearer ${key}` } });
    assert.equal(r.status, 401, `${p} refuses an organization's key`);
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
  for (const tab of ["Overview", "Messages", "Chatbot", "Campaigns", "Templates", "Costs"]) {
    await openView(page, tab);
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
