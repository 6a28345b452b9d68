// The whatstat dashboard: plain ES module, no build step. Every figure comes from the
// analytics API with the signed-in key (or the share token in the path).

const $ = (id) => document.getElementById(id);
const KEY_STORE = "whatstat.key";
const share = location.pathname.match(/^\/share\/([^/]+)\/?$/);
const readOnly = Boolean(share);

// Okabe–Ito: told apart by colour-blind readers; lines also differ by dash.
const COLORS = {
  sent: "#0072B2", received: "#E69F00", delivered: "#009E73", read: "#CC79A7",
  failed: "#D55E00", conversations: "#0072B2", auto_resolved: "#009E73",
  transferred: "#E69F00", abandoned: "#D55E00", ai_requests: "#0072B2",
  ai_tokens: "#CC79A7", ai_cost: "#009E73", replied: "#E69F00",
  estimated_cost: "#0072B2", total_cost: "#CC79A7",
};
const DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3], [1, 3]];
const VIEWS = ["overview", "messages", "chatbot", "campaigns", "templates", "costs"];
// Views whose answers are asked only while they are shown (the overview's three always are).
const SPEND = ["campaigns", "templates", "costs"];

const state = {
  token: share ? decodeURIComponent(share[1]) : sessionStorage.getItem(KEY_STORE),
  org: null,
  view: "overview",
  data: null,
  charts: new Map(),
  generation: 0,
  // The template whose timeline was chosen; kept across ranges while the list holds it.
  template: null,
};

const num = new Intl.NumberFormat("en-US");
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const dec = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const one = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 });
const fmt = {
  n: (v) => (v == null ? "–" : num.format(v)),
  rate: (v) => (v == null ? "–" : `${one.format(v)} %`),
  one: (v) => (v == null ? "–" : one.format(v)),
  dec: (v) => (v == null ? "–" : dec.format(v)),
  usd: (v) => (v == null ? "–" : usd.format(v)),
  secs: (v) => {
    if (v == null) return "–";
    if (v < 90) return `${dec.format(v)} s`;
    if (v < 5400) return `${dec.format(v / 60)} min`;
    return `${dec.format(v / 3600)} h`;
  },
};

// Money in the answer's currency: cents, and four decimals below one cent (where a message's
// price would otherwise read as 0.00) and for a price per message (`unit`: 0.0138 is not 0.01).
const moneyFormats = new Map();
function money(v, currency = "USD", unit = false) {
  if (v == null) return "–";
  const digits = v !== 0 && (unit || Math.abs(v) < 0.01) ? 4 : 2;
  const k = `${currency}|${digits}`;
  if (!moneyFormats.has(k)) {
    let f;
    try {
      f = new Intl.NumberFormat("en-US", { style: "currency", currency, minimumFractionDigits: 2, maximumFractionDigits: digits });
    } catch {
      // Not an ISO 4217 code Intl knows: the number and the code as the server gave it.
      const n = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
      f = { format: (x) => `${n.format(x)} ${currency}` };
    }
    moneyFormats.set(k, f);
  }
  return moneyFormats.get(k).format(v);
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `the server answered ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) url.searchParams.set(k, v);
  const res = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` } });
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: reported by status */ }
  if (!res.ok || body?.status !== "success") throw new ApiError(res.status, body);
  return body.data;
}

// ---------- dates in the organization's zone ----------

function todayLocal() {
  return new Intl.DateTimeFormat("en-CA", { timeZone: state.org.timezone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
}
const toDate = (s) => new Date(`${s}T00:00:00Z`);
const iso = (d) => d.toISOString().slice(0, 10);
const addDays = (s, n) => { const d = toDate(s); d.setUTCDate(d.getUTCDate() + n); return iso(d); };
const firstOfMonth = (s, back = 0) => { const d = toDate(s); d.setUTCDate(1); d.setUTCMonth(d.getUTCMonth() - back); return iso(d); };
const daysBetween = (a, b) => Math.round((toDate(b) - toDate(a)) / 86400000) + 1;

function rangeDates(kind) {
  const t = todayLocal();
  switch (kind) {
    case "today": return [t, t];
    case "yesterday": return [addDays(t, -1), addDays(t, -1)];
    case "7d": return [addDays(t, -6), t];
    case "this-month": return [firstOfMonth(t), t];
    case "last-month": return [firstOfMonth(t, 1), addDays(firstOfMonth(t), -1)];
    case "12m": return [firstOfMonth(t, 11), t];
    case "custom": return [$("start").value || addDays(t, -29), $("end").value || t];
    default: return [addDays(t, -29), t];
  }
}

function granularityFor(start, end) {
  const days = daysBetween(start, end);
  if (days <= 2) return "hour";
  if (days <= 92) return "day";
  if (days <= 400) return "month";
  return "month";
}

// The dashboard endpoint speaks of calendar periods up to now, not of ranges.
function periodFor(kind) {
  return { today: "today", yesterday: "today", "7d": "week", "12m": "year" }[kind] || "month";
}

function query() {
  const kind = $("range").value;
  const [start, end] = rangeDates(kind);
  return {
    kind, start, end,
    account: $("account").value,
    granularity: $("granularity").value,
    compare: $("compare").checked,
    live: end >= todayLocal(),
  };
}

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// The API gives each summary figure's change in percent of the previous figure, `null` where
// that figure was 0 (no percentage exists); the previous figure itself goes in the tooltip.
function changeBadge(metric, change, key, previous, format, current) {
  if (!change || !(key in change)) return null;
  const v = change[key];
  const was = previous == null ? "" : `previous period: ${format(previous)}`;
  if (v == null && !current) {
    // Nothing then and nothing now: no change, and nothing "new" either.
    return h("span", { class: "change flat", "data-change": metric, "data-value": "", title: `${was}; none in either period` }, "–");
  }
  if (v == null) {
    return h("span", { class: "change flat", "data-change": metric, "data-value": "", title: `${was}; no percentage of 0` }, "new");
  }
  const dir = v > 0 ? "up" : v < 0 ? "down" : "flat";
  const arrow = v > 0 ? "▲" : v < 0 ? "▼" : "■";
  return h("span", { class: `change ${dir}`, "data-change": metric, "data-value": v, title: was },
    h("span", { "aria-hidden": "true" }, `${arrow} `), `${v > 0 ? "+" : v < 0 ? "−" : ""}${dec.format(Math.abs(v))} %`,
    h("span", { class: "visually-hidden" }, " against the previous period"));
}

// `cmp` is `[change, previous]` of the figure's section, both absent without comparison.
function kpi(label, value, format, metric, cmp, changeKey) {
  return h("div", { class: "kpi" },
    h("span", { class: "kpi-label" }, label),
    h("span", { class: "kpi-value", "data-metric": metric, "data-value": value ?? "" }, format(value)),
    cmp ? changeBadge(metric, cmp[0], changeKey, cmp[1]?.[changeKey], format, value) : null);
}

function card(title, body, { csv, table, wide, note } = {}) {
  const tools = h("div", { class: "card-tools" });
  const status = h("span", { class: "card-status muted", role: "status" });
  if (csv) {
    tools.append(h("button", { type: "button", class: "small", onclick: () => downloadCsv(csv, status) }, "Download CSV"));
  }
  const el = h("article", { class: `card${wide ? " wide" : ""}` },
    h("header", { class: "card-head" }, h("h3", {}, title), tools),
    note ? h("p", { class: "muted note" }, note) : null,
    body,
    status,
    table ? h("details", { class: "table-view" }, h("summary", {}, "Show table"), table) : null);
  return el;
}

function dataTable(columns, rows, name) {
  return h("div", { class: "table-wrap" }, h("table", { "data-table": name },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c, i) => {
      const v = r[c.key];
      const cell = i === 0 ? "th" : "td";
      return h(cell, { "data-key": c.key, "data-value": v ?? "", scope: i === 0 ? "row" : null }, c.format ? c.format(v) : (v ?? "–"));
    }))))));
}

function bars(rows, labelKey, valueKey, metric, { extra, long } = {}) {
  const max = Math.max(1, ...rows.map((r) => r[valueKey]));
  if (!rows.length) return h("p", { class: "muted empty-note" }, "Nothing in this range.");
  return h("ul", { class: long ? "bars long" : "bars" }, rows.map((r) => h("li", {},
    h("span", { class: "bar-label" }, r[labelKey] ?? "unknown"),
    h("span", { class: "bar-track", "aria-hidden": "true" }, h("span", { class: `bar-fill${r.tone ? ` tone-${r.tone}` : ""}`, "data-w": (100 * r[valueKey]) / max })),
    h("span", { class: "bar-value", "data-metric": `${metric}.${r[labelKey]}`, "data-value": r[valueKey] }, extra ? extra(r) : fmt.n(r[valueKey])))));
}

// Widths are set through the CSSOM: the page's policy allows no inline style attributes.
function applyBarWidths(root) {
  for (const el of root.querySelectorAll("[data-w]")) el.style.width = `${Math.max(0.5, Number(el.dataset.w))}%`;
}

// ---------- charts ----------

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function labelToTime(label) {
  if (/^\d{4}-\d{2}$/.test(label)) return Date.parse(`${label}-01T00:00:00Z`) / 1000;
  if (/^\d{4}-\d{2}-\d{2}$/.test(label)) return Date.parse(`${label}T00:00:00Z`) / 1000;
  // Hours carry their offset; shown in the organization's wall time.
  const m = label.match(/^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})/);
  return m ? Date.parse(`${m[1]}Z`) / 1000 : Date.parse(label) / 1000;
}

function timeChart(id, rows, series, granularity) {
  const holder = h("div", { class: "chart", id: `chart-${id}`, role: "img", "aria-label": `${series.map((s) => s.label).join(", ")} over time; the numbers are in the table below` });
  const xs = rows.map((r) => labelToTime(r.date));
  const data = [xs, ...series.map((s) => rows.map((r) => r[s.key]))];
  const existing = state.charts.get(id);
  if (existing && existing.series.length === series.length + 1 && existing.granularity === granularity) {
    existing.chart.setData(data);
    return existing.holder;
  }
  if (existing) existing.chart.destroy();
  const scales = [...new Set(series.map((s) => s.scale || "y"))];
  const scaleFormat = Object.fromEntries(series.filter((s) => s.axisFormat).map((s) => [s.scale || "y", s.axisFormat]));
  requestAnimationFrame(() => {
    const width = Math.max(260, holder.clientWidth || 600);
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid") } };
    const dateFmt = granularity === "hour" ? "{HH}:{mm}\n{M}/{D}" : granularity === "month" ? "{MMM} {YYYY}" : "{MMM} {D}";
    const chart = new uPlot({
      width, height: 240, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      legend: { live: true },
      cursor: { focus: { prox: 16 } },
      scales: { x: { time: true }, ...Object.fromEntries(scales.map((s) => [s, { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] }])) },
      // One axis per scale (left, then right), labelled compactly so no label is cut off.
      axes: [{ ...axis, values: (u, splits) => splits.map((v) => uPlot.fmtDate(dateFmt)(uPlot.tzDate(new Date(v * 1e3), "Etc/UTC"))) },
        ...scales.map((scale, i) => ({ ...axis, scale, side: i === 0 ? 3 : 1, size: 56, grid: { ...axis.grid, show: i === 0 },
          label: scales.length > 1 ? series.find((s) => (s.scale || "y") === scale).label : undefined, labelSize: 18,
          values: (u, splits) => splits.map((v) => (scaleFormat[scale] || ((x) => compact.format(x)))(v)) }))],
      series: [{ label: "Date", value: (u, v) => (v == null ? "–" : uPlot.fmtDate(granularity === "hour" ? "{YYYY}-{MM}-{DD} {HH}:{mm}" : granularity === "month" ? "{YYYY}-{MM}" : "{YYYY}-{MM}-{DD}")(uPlot.tzDate(new Date(v * 1e3), "Etc/UTC"))) },
        ...series.map((s, i) => ({ label: s.label, scale: s.scale || "y", stroke: COLORS[s.key] || "#0072B2", width: 2, dash: DASHES[i % DASHES.length], points: { show: rows.length * 14 < width }, value: (u, v) => (v == null ? "–" : s.format ? s.format(v) : num.format(v)) }))],
    }, data, holder);
    state.charts.set(id, { chart, holder, series: chart.series, granularity });
  });
  state.charts.set(id, { chart: { setData() {}, destroy() {} }, holder, series: [], granularity: null });
  return holder;
}

function resizeCharts() {
  for (const { chart, holder } of state.charts.values()) {
    if (chart.setSize && holder.isConnected && holder.clientWidth) chart.setSize({ width: holder.clientWidth, height: 240 });
  }
}

function resetCharts() {
  for (const { chart } of state.charts.values()) chart.destroy();
  state.charts.clear();
}

function funnel(summary) {
  const steps = [
    { label: "Sent", key: "total_sent", value: summary.total_sent },
    { label: "Delivered", key: "total_delivered", value: summary.total_delivered, rate: summary.delivery_rate, rateLabel: "delivery rate" },
    { label: "Read", key: "total_read", value: summary.total_read, rate: summary.read_rate, rateLabel: "read rate" },
  ];
  const max = Math.max(1, summary.total_sent);
  const W = 300, row = 46;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${row * steps.length}`);
  svg.setAttribute("class", "funnel");
  svg.setAttribute("aria-hidden", "true");
  steps.forEach((s, i) => {
    const w = Math.max(4, (W * s.value) / max);
    const rect = document.createElementNS(svg.namespaceURI, "rect");
    Object.entries({ x: (W - w) / 2, y: i * row + 4, width: w, height: row - 10, rx: 4, fill: [COLORS.sent, COLORS.delivered, COLORS.read][i] }).forEach(([k, v]) => rect.setAttribute(k, v));
    svg.append(rect);
  });
  const list = h("ol", { class: "funnel-steps" }, steps.map((s) => h("li", {},
    h("span", { class: "step-label" }, s.label),
    h("strong", { "data-metric": `funnel.${s.key}`, "data-value": s.value }, fmt.n(s.value)),
    s.rate != null ? h("span", { class: "muted" }, ` · ${fmt.rate(s.rate)} ${s.rateLabel}`) : null)));
  return h("div", { class: "funnel-wrap" }, svg, list);
}

// ---------- CSV ----------

async function downloadCsv({ endpoint, table, params: extra }, status) {
  const q = query();
  status.textContent = "Preparing CSV…";
  try {
    const url = new URL(`/api/analytics/${endpoint}`, location.origin);
    // The CSV is of the asked range only: the comparison is not part of any table.
    const params = { ...baseParams(q, endpoint), compare: null, ...(typeof extra === "function" ? extra() : extra) };
    for (const [k, v] of Object.entries({ ...params, format: "csv", table })) if (v) url.searchParams.set(k, v);
    const res = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` } });
    if (!res.ok) {
      let msg = `the server answered ${res.status}`;
      try { msg = (await res.json()).message || msg; } catch { /* keep the status */ }
      throw new Error(msg);
    }
    const blob = await res.blob();
    const named = params.template ? `-${params.template.replace(/[^\w.-]+/g, "_")}` : "";
    const a = h("a", { href: URL.createObjectURL(blob), download: `whatstat-${endpoint}-${table}${named}-${q.start}-${q.end}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    status.textContent = "";
  } catch (e) {
    status.textContent = `CSV not available: ${e.message}`;
  }
}

// ---------- loading ----------

function baseParams(q, endpoint) {
  const p = { account_id: q.account };
  if (endpoint === "dashboard") return { ...p, period: periodFor(q.kind), ...(q.compare ? { compare: "previous" } : {}) };
  p.start_date = q.start;
  p.end_date = q.end;
  // Campaigns have no timeline, and no spend answer compares periods: the routes refuse
  // parameters they do not know.
  if (endpoint === "campaigns") return p;
  p.granularity = q.granularity;
  if (q.compare && !SPEND.includes(endpoint)) p.compare = "previous";
  return p;
}

async function load({ quiet = false } = {}) {
  const generation = ++state.generation;
  const q = query();
  if (!quiet) setState("loading");
  try {
    const [messages, chatbot, dashboard, extra] = await Promise.all([
      api("/api/analytics/messages", baseParams(q, "messages")),
      api("/api/analytics/chatbot", baseParams(q, "chatbot")),
      api("/api/analytics/dashboard", baseParams(q, "dashboard")),
      EXTRA[state.view] ? EXTRA[state.view](q) : {},
    ]);
    if (generation !== state.generation) return;
    state.data = { q, messages, chatbot, dashboard, ...extra };
    setState("ready");
    render();
    // The tab may have changed while the figures were asked for.
    loadView(state.view);
  } catch (e) {
    if (generation !== state.generation) return;
    if (e.status === 401) { state.data = null; setState("error", e, q); return; }
    if (quiet && state.data) { $("notice").textContent = `Could not refresh: ${e.message}`; return; }
    setState("error", e, q);
  }
}

// Each spend view's answers for the query `q`, as fields of `state.data`.
const EXTRA = {
  campaigns: async (q) => ({ campaigns: await api("/api/analytics/campaigns", baseParams(q, "campaigns")) }),
  costs: async (q) => ({ costs: await api("/api/analytics/costs", baseParams(q, "costs")) }),
  // The list, and beside it the chosen template's timeline (the list narrowed to that
  // template is not used); without a choice, or one the range does not hold, the most sent.
  templates: async (q) => {
    const params = baseParams(q, "templates");
    const one = (name) => api("/api/analytics/templates", { ...params, template: name }).then((d) => ({ name, timeline: d.timeline || [] }));
    const wanted = state.template;
    const early = wanted ? one(wanted) : null;
    early?.catch(() => { /* awaited below when used */ });
    const templates = await api("/api/analytics/templates", params);
    const names = templates.templates.map((t) => t.template_name).filter(Boolean);
    const chosen = names.includes(wanted) ? wanted : (names[0] ?? null);
    const template = chosen == null ? null : chosen === wanted ? await early : await one(chosen);
    return { templates, template };
  },
};

// Asks for a spend view's answers when they are not among the figures shown.
async function loadView(view) {
  const d = state.data;
  if (!d || !EXTRA[view] || view in d) return;
  d.pending ??= new Set();
  if (d.pending.has(view)) return;
  d.pending.add(view);
  try {
    const extra = await EXTRA[view](d.q);
    // Newer figures replaced these meanwhile: their load asks for the view itself.
    if (state.data !== d) return;
    Object.assign(d, extra);
    render();
  } catch (e) {
    if (state.data !== d) return;
    setState("error", e, d.q);
  } finally {
    d.pending.delete(view);
  }
}

// A template picked in the table or the list: only its timeline is asked for.
async function chooseTemplate(name, reveal = false) {
  state.template = name;
  const d = state.data;
  if (!d?.templates || d.template?.name === name) return;
  const box = document.querySelector('[data-card="templates-timeline"] .card-status');
  if (box) box.textContent = `Loading ${name}…`;
  try {
    const answer = await api("/api/analytics/templates", { ...baseParams(d.q, "templates"), template: name });
    if (state.data !== d || state.template !== name) return;
    d.template = { name, timeline: answer.timeline || [] };
    render();
    if (reveal) document.querySelector('[data-card="templates-timeline"]')?.scrollIntoView({ block: "nearest", behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth" });
  } catch (e) {
    if (state.data !== d) return;
    if (e.status === 401) setState("error", e, d.q);
    else if (box?.isConnected) box.textContent = `Could not load ${name}: ${e.message}`;
  }
}

function setState(kind, error, q) {
  const box = $("state");
  box.replaceChildren();
  box.removeAttribute("aria-busy");
  $("notice").textContent = "";
  for (const v of VIEWS) $(`view-${v}`).hidden = kind !== "ready" || state.view !== v;
  if (kind === "loading") {
    box.setAttribute("aria-busy", "true");
    box.append(h("div", { class: "panel state-loading", "data-state": "loading" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Loading figures…"));
  } else if (kind === "error") {
    const actions = h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => load() }, "Try again"));
    let title = "The figures could not be loaded";
    let hint = null;
    if (error.status === 401) {
      title = readOnly ? "This share link is not valid" : "This key is not accepted";
      hint = readOnly ? "The link may have expired or been revoked. Ask for a new one." : "Sign in again with a valid API key.";
      if (!readOnly) actions.replaceChildren(h("button", { type: "button", class: "primary", onclick: signOut }, "Sign in again"));
      else actions.replaceChildren();
    } else if (error.code === "range_not_servable") {
      title = "This range cannot be shown as asked";
      hint = "Figures at this detail are not kept for the whole range. The nearest choice that can be shown:";
      actions.replaceChildren();
      if (q) suggestServable(q, actions);
    }
    box.append(h("div", { class: "panel state-error", "data-state": "error" },
      h("h2", {}, title),
      h("p", { class: "api-message", "data-api-message": "" }, error.message),
      hint ? h("p", { class: "muted" }, hint) : null, actions));
  }
}

const COARSER = { hour: ["day", "week", "month"], day: ["week", "month"], week: ["month"], month: [] };

// Choices near the asked one, nearest first: the same dates at a coarser granularity, then
// the dates widened to whole months by month, then narrowed to whole months by month.
function servableCandidates(q) {
  const out = COARSER[q.granularity].map((g) => ({ start: q.start, end: q.end, granularity: g, label: `Show by ${g} instead` }));
  const wide = firstOfMonth(q.start);
  if (wide !== q.start) out.push({ start: wide, end: q.end, granularity: "month", label: `Show from ${wide}, by month` });
  const next = firstOfMonth(addDays(firstOfMonth(q.start), 40));
  if (next > q.start && next <= q.end) out.push({ start: next, end: q.end, granularity: "month", label: `Show from ${next}, by month` });
  return out;
}

// The nearest choice the tiers can serve, each candidate asked of the server itself (the
// tiers it keeps are its own business); the first that answers is offered.
async function suggestServable(q, actions) {
  for (const c of servableCandidates(q)) {
    try {
      await api("/api/analytics/messages", { account_id: q.account, start_date: c.start, end_date: c.end, granularity: c.granularity });
    } catch (e) {
      if (e.code === "range_not_servable") continue;
      break;
    }
    actions.append(h("button", { type: "button", class: "primary", "data-suggest": c.granularity, "data-suggest-start": c.start, onclick: () => applyChoice(c, q) }, c.label));
    return;
  }
  actions.append(h("button", { type: "button", class: "primary", "data-suggest": "30d", onclick: () => { $("range").value = "30d"; onRangeChange(); } }, "Show the last 30 days"));
}

function applyChoice(c, q) {
  if (c.start !== q.start || c.end !== q.end) {
    $("range").value = "custom";
    $("custom").hidden = false;
    $("start").value = c.start;
    $("end").value = c.end;
  }
  $("granularity").value = c.granularity;
  refresh();
}

// ---------- views ----------

function isEmpty(d) {
  const m = d.messages.summary, c = d.chatbot.summary;
  return m.total_sent + m.total_received === 0 && c.total_conversations === 0 && d.dashboard.contacts.total === 0;
}

function onboarding() {
  const origin = location.origin;
  return h("article", { class: "card wide onboarding", "data-state": "empty" },
    h("h3", {}, "No figures yet"),
    h("p", {}, "Nothing has been recorded for this range. Send your first events, or connect your WhatsApp number's webhook."),
    h("h4", {}, "1. Post events"),
    h("pre", {}, h("code", {}, `curl -X POST ${origin}/api/events \\\n  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\\n  -d '[{"type":"message","account_id":"acct-1","timestamp":"${new Date().toISOString().slice(0, 19)}Z",\n       "id":"wamid.1","direction":"outbound","message_type":"template"}]'`)),
    h("h4", {}, "2. Or set up the Meta webhook"),
    h("p", {}, "Register the account with its phone_number_id, verify token and app secret (POST /api/accounts), then set the callback URL in Meta's app dashboard to ", h("code", {}, `${origin}/webhooks/whatsapp`), "."));
}

function render() {
  const d = state.data;
  if (!d) return;
  const views = { overview: renderOverview, messages: renderMessages, chatbot: renderChatbot, campaigns: renderCampaigns, templates: renderTemplates, costs: renderCosts };
  // A control re-drawn by new figures keeps the keyboard's focus.
  const focused = document.activeElement?.dataset?.focus;
  for (const [name, fn] of Object.entries(views)) {
    const el = $(`view-${name}`);
    const scrollY = window.scrollY;
    const open = [...el.querySelectorAll("details[open]")].map((x) => x.closest("[data-card]")?.dataset.card);
    el.replaceChildren(...(isEmpty(d) && name === "overview" ? [onboarding()] : []), ...fn(d));
    for (const id of open) el.querySelector(`[data-card="${id}"] details`)?.setAttribute("open", "");
    applyBarWidths(el);
    window.scrollTo(0, scrollY);
  }
  if (focused) document.querySelector(`[data-focus="${CSS.escape(focused)}"]`)?.focus({ preventScroll: true });
}

const tag = (el, id) => { el.dataset.card = id; return el; };

const day = (instant) => instant.slice(0, 10);

// What the figures are compared with, or the API's reason why they cannot be.
function previousNote(data) {
  if (data.previous === null && data.previous_unavailable) return `No comparison: ${data.previous_unavailable}`;
  if (data.previous?.range) {
    const r = data.previous.range;
    return `Compared with ${day(r.start)} up to ${r.end.slice(0, 16).replace("T", " ")} (${r.timezone})`;
  }
  return null;
}

function renderOverview({ messages: m, chatbot: c, dashboard: db, q }) {
  const s = m.summary, cs = c.summary;
  const pair = (change, previous) => (change ? [change, previous] : null);
  const mc = pair(m.change, m.previous?.summary), cc = pair(c.change, c.previous?.summary);
  const dc = (section) => pair(db.change?.[section], db.previous?.[section]);
  const grid = (...k) => h("div", { class: "kpis" }, k);
  const rangeText = `${q.start} to ${q.end}`;
  const figures = { endpoint: "dashboard", table: "figures" };
  return [
    tag(card("Messages", grid(
      kpi("Sent", s.total_sent, fmt.n, "messages.total_sent", mc, "total_sent"),
      kpi("Received", s.total_received, fmt.n, "messages.total_received", mc, "total_received"),
      kpi("Delivered", s.total_delivered, fmt.n, "messages.total_delivered", mc, "total_delivered"),
      kpi("Read", s.total_read, fmt.n, "messages.total_read", mc, "total_read"),
      kpi("Failed", s.total_failed, fmt.n, "messages.total_failed", mc, "total_failed"),
      kpi("Delivery rate", s.delivery_rate, fmt.rate, "messages.delivery_rate", mc, "delivery_rate"),
      kpi("Read rate", s.read_rate, fmt.rate, "messages.read_rate", mc, "read_rate")),
    { wide: true, note: [rangeText, previousNote(m)].filter(Boolean).join(" · ") }), "ov-messages"),
    tag(card("Chatbot", grid(
      kpi("Conversations", cs.total_conversations, fmt.n, "chatbot.total_conversations", cc, "total_conversations"),
      kpi("Auto-resolved", cs.auto_resolved, fmt.n, "chatbot.auto_resolved", cc, "auto_resolved"),
      kpi("Transferred", cs.transferred_to_agent, fmt.n, "chatbot.transferred_to_agent", cc, "transferred_to_agent"),
      kpi("Abandoned", cs.abandoned, fmt.n, "chatbot.abandoned", cc, "abandoned"),
      kpi("Resolution rate", cs.resolution_rate, fmt.rate, "chatbot.resolution_rate", cc, "resolution_rate")),
    { wide: true, note: previousNote(c) }), "ov-chatbot"),
    tag(card("Contacts", grid(
      kpi("Total", db.contacts.total, fmt.n, "dashboard.contacts.total", dc("contacts"), "total"),
      kpi("New today", db.contacts.new_today, fmt.n, "dashboard.contacts.new_today", dc("contacts"), "new_today"),
      kpi("New this week", db.contacts.new_this_week, fmt.n, "dashboard.contacts.new_this_week", dc("contacts"), "new_this_week"),
      kpi(`Growth this ${periodFor(q.kind)}`, db.contacts.growth_percent, fmt.rate, "dashboard.contacts.growth_percent", dc("contacts"), "growth_percent")),
    { note: previousNote(db), csv: figures }), "ov-contacts"),
    tag(card("Campaigns", grid(
      kpi("Total", db.campaigns.total, fmt.n, "dashboard.campaigns.total", dc("campaigns"), "total"),
      kpi("Active", db.campaigns.active, fmt.n, "dashboard.campaigns.active", dc("campaigns"), "active"),
      kpi("Completed this month", db.campaigns.completed_this_month, fmt.n, "dashboard.campaigns.completed_this_month", dc("campaigns"), "completed_this_month")),
    { csv: figures }), "ov-campaigns"),
    tag(card("Today", grid(
      kpi("Messages", db.messages.today, fmt.n, "dashboard.messages.today", dc("messages"), "today"),
      kpi("Conversations", db.chatbot.conversations_today, fmt.n, "dashboard.chatbot.conversations_today", dc("chatbot"), "conversations_today")),
    { csv: figures }), "ov-today"),
  ];
}

const MSG_SERIES = [
  { key: "sent", label: "Sent" }, { key: "received", label: "Received" }, { key: "delivered", label: "Delivered" },
  { key: "read", label: "Read" }, { key: "failed", label: "Failed" },
];

function renderMessages({ messages: m, q }) {
  const timelineCols = [{ key: "date", label: "Date" }, ...MSG_SERIES.map((s) => ({ ...s, format: fmt.n }))];
  const types = Object.entries(m.by_type || {}).map(([type, count]) => ({ type, count })).sort((a, b) => b.count - a.count);
  const out = [
    tag(card("Messages over time", timeChart("messages", m.timeline, MSG_SERIES, q.granularity),
      { wide: true, csv: { endpoint: "messages", table: "timeline" }, table: dataTable(timelineCols, m.timeline, "messages.timeline") }), "messages-timeline"),
    tag(card("Delivery funnel", funnel(m.summary), { table: dataTable(
      [{ key: "step", label: "Step" }, { key: "count", label: "Messages", format: fmt.n }, { key: "rate", label: "Rate", format: fmt.rate }],
      [{ step: "Sent", count: m.summary.total_sent, rate: null },
        { step: "Delivered", count: m.summary.total_delivered, rate: m.summary.delivery_rate },
        { step: "Read", count: m.summary.total_read, rate: m.summary.read_rate }], "messages.funnel") }), "messages-funnel"),
    tag(card("Messages by type", bars(types, "type", "count", "by_type"),
      { csv: { endpoint: "messages", table: "by_type" }, table: dataTable([{ key: "type", label: "Type" }, { key: "count", label: "Messages", format: fmt.n }], types, "messages.by_type") }), "messages-types"),
  ];
  const errors = m.by_error.map((e) => ({ ...e, label: e.error_code == null ? e.title : `${e.title} (${e.error_code})` }));
  out.push(tag(card("Failure reasons", errors.length ? bars(errors, "label", "count", "by_error", { long: true }) : h("p", { class: "muted empty-note" }, "No failed messages in this range."),
    { csv: { endpoint: "messages", table: "by_error" }, table: dataTable([{ key: "error_code", label: "Code" }, { key: "title", label: "Reason" }, { key: "count", label: "Failed", format: fmt.n }], m.by_error, "messages.by_error") }), "messages-errors"));
  return out;
}

const OUTCOME_SERIES = [
  { key: "conversations", label: "Conversations" }, { key: "auto_resolved", label: "Auto-resolved" },
  { key: "transferred", label: "Transferred" }, { key: "abandoned", label: "Abandoned" },
];
// Requests and tokens differ a thousandfold: each has its own axis. Cost is its own chart.
const AI_SERIES = [{ key: "ai_tokens", label: "Tokens" }, { key: "ai_requests", label: "Requests", scale: "requests" }];
const COST_SERIES = [{ key: "ai_cost", label: "Cost (USD)", format: (v) => usd.format(v), axisFormat: (v) => usd.format(v) }];

function renderChatbot({ chatbot: c, q }) {
  const s = c.summary, ai = c.ai_usage;
  const g = q.granularity;
  const cmp = c.change ? [c.change, c.previous?.summary] : null;
  const out = [];
  const timeline = c.timeline || [];
  out.push(tag(card("Conversations by outcome", timeChart("outcomes", timeline, OUTCOME_SERIES, g),
    { wide: true, csv: { endpoint: "chatbot", table: "timeline" },
      table: dataTable([{ key: "date", label: "Date" }, ...OUTCOME_SERIES.map((x) => ({ ...x, format: fmt.n }))], timeline, "chatbot.timeline") }), "chatbot-outcomes"));
  out.push(tag(card("Conversations", h("div", { class: "kpis" },
    kpi("Average messages", s.avg_messages_per_conversation, fmt.one, "chatbot.avg_messages_per_conversation", cmp, "avg_messages_per_conversation"),
    kpi("Average resolution time", s.avg_resolution_time_seconds, fmt.secs, "chatbot.avg_resolution_time_seconds", cmp, "avg_resolution_time_seconds"),
    kpi("Resolution rate", s.resolution_rate, fmt.rate, "chatbot.summary.resolution_rate", cmp, "resolution_rate"))), "chatbot-averages"));
  const flows = c.by_flow || [];
  out.push(tag(card("Flows", flows.length ? flowTable(flows) : h("p", { class: "muted empty-note" }, "No flow runs in this range."),
    { wide: true, csv: { endpoint: "chatbot", table: "by_flow" } }), "chatbot-flows"));
  const kws = c.top_keywords || [];
  out.push(tag(card("Top keywords", bars(kws, "keyword", "count", "top_keywords"),
    { csv: { endpoint: "chatbot", table: "top_keywords" }, table: dataTable([{ key: "keyword", label: "Keyword" }, { key: "count", label: "Hits", format: fmt.n }], kws, "chatbot.top_keywords") }), "chatbot-keywords"));
  out.push(tag(card("AI usage", h("div", {},
    h("div", { class: "kpis" },
      kpi("Requests", ai.total_requests, fmt.n, "chatbot.ai_usage.total_requests"),
      kpi("Tokens", ai.total_tokens, fmt.n, "chatbot.ai_usage.total_tokens"),
      kpi("Tokens per request", ai.avg_tokens_per_request, fmt.dec, "chatbot.ai_usage.avg_tokens_per_request"),
      kpi("Estimated cost", ai.estimated_cost, fmt.usd, "chatbot.ai_usage.estimated_cost")),
    timeChart("ai", timeline, AI_SERIES, g),
    timeChart("ai-cost", timeline, COST_SERIES, g)),
  { wide: true, csv: { endpoint: "chatbot", table: "timeline" },
    table: dataTable([{ key: "date", label: "Date" }, ...[AI_SERIES[1], AI_SERIES[0], COST_SERIES[0]].map((x) => ({ ...x, format: x.format || fmt.n }))], timeline, "chatbot.ai_timeline") }), "chatbot-ai"));
  return out;
}

function flowTable(flows) {
  return h("div", { class: "table-wrap" }, h("table", { class: "flows", "data-table": "chatbot.by_flow" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Flow"), h("th", { scope: "col" }, "Runs"), h("th", { scope: "col" }, "Completed"), h("th", { scope: "col" }, "Completion"))),
    h("tbody", {}, flows.map((f) => h("tr", {},
      h("th", { scope: "row", "data-key": "flow_name", "data-value": f.flow_name }, f.flow_name),
      h("td", { "data-key": "conversations", "data-value": f.conversations }, fmt.n(f.conversations)),
      h("td", { "data-key": "completed", "data-value": f.completed }, fmt.n(f.completed)),
      h("td", { "data-key": "completion_rate", "data-value": f.completion_rate },
        h("span", { class: "completion" },
          h("span", { class: "bar-track", "aria-hidden": "true" }, h("span", { class: "bar-fill", "data-w": f.completion_rate })),
          fmt.rate(f.completion_rate))))))));
}

// ---------- campaigns, templates, costs ----------

const STATUS_LABEL = { created: "Created", scheduled: "Scheduled", running: "Running", completed: "Completed", cancelled: "Cancelled", failed: "Failed", unknown: "Unknown" };

function statusBadge(status) {
  const known = status in STATUS_LABEL ? status : "unknown";
  return h("span", { class: `badge status-${known}`, title: status === "unknown" ? "No campaign event has told this campaign's status" : null }, STATUS_LABEL[status] ?? status);
}

// Sent, delivered, read and replied as bars of the row's sent.
function miniFunnel(r) {
  const max = Math.max(1, r.sent);
  return h("span", { class: "mini-funnel", "aria-hidden": "true" },
    ["sent", "delivered", "read", "replied"].map((k) => h("span", { class: `mf mf-${k}`, "data-w": (100 * r[k]) / max })));
}

// A cell's count with its rate beneath (the rate's base is in the card's note).
function stepCell(r, key, metric, rateKey, rateLabel) {
  return h("td", { "data-key": key, "data-value": r[key] },
    h("span", { class: "step-count", "data-metric": `${metric}.${key}`, "data-value": r[key] }, fmt.n(r[key])),
    rateKey ? h("span", { class: "step-rate", "data-metric": `${metric}.${rateKey}`, "data-value": r[rateKey] ?? "", title: rateLabel },
      fmt.rate(r[rateKey]), h("span", { class: "visually-hidden" }, ` ${rateLabel}`)) : null);
}

// Campaigns and templates: a row's funnel (sent → delivered → read → replied) as counts with
// their rates and a small picture of it, failures and Meta's estimated spend. The API sorts
// the rows by sent, most first, as the header says.
function funnelTable(name, rows, lead, currency, metricOf, rowClass) {
  return h("div", { class: "table-wrap" }, h("table", { class: "funnel-table", "data-table": name },
    h("thead", {}, h("tr", {},
      lead.map((c) => h("th", { scope: "col", class: "left" }, c.label)),
      h("th", { scope: "col", class: "mf-col" }, h("span", { class: "visually-hidden" }, "Funnel")),
      h("th", { scope: "col", "aria-sort": "descending" }, "Sent ", h("span", { class: "sort", "aria-hidden": "true" }, "▼")),
      ["Delivered", "Read", "Replied", "Failed", "Est. cost"].map((l) => h("th", { scope: "col" }, l)))),
    h("tbody", {}, rows.map((r) => {
      const m = metricOf(r);
      return h("tr", { class: rowClass?.(r) || null },
        lead.map((c, i) => h(i === 0 ? "th" : "td", { scope: i === 0 ? "row" : null, class: "left", "data-key": c.key, "data-value": r[c.key] ?? "" }, c.cell ? c.cell(r) : (r[c.key] || "–"))),
        h("td", { class: "mf-col" }, miniFunnel(r)),
        stepCell(r, "sent", m),
        stepCell(r, "delivered", m, "delivery_rate", "delivery rate"),
        stepCell(r, "read", m, "read_rate", "read rate"),
        stepCell(r, "replied", m, "reply_rate", "reply rate"),
        h("td", { "data-key": "failed", "data-value": r.failed, "data-metric": `${m}.failed` }, fmt.n(r.failed)),
        h("td", { "data-key": "estimated_cost", "data-value": r.estimated_cost, "data-metric": `${m}.estimated_cost` }, money(r.estimated_cost, currency)));
    }))));
}

const RATES_NOTE = "Rates: delivered of sent; read and replied of delivered.";

function funnelLegend() {
  return h("p", { class: "mf-legend muted", "aria-hidden": "true" }, "Bars of sent: ",
    ["sent", "delivered", "read", "replied"].map((k) => h("span", { class: "mf-key" }, h("span", { class: `mf-swatch mf-${k}` }), k)));
}
const rangeNote = (q) => `${q.start} to ${q.end}`;

function viewPending(name) {
  return [h("div", { class: "card wide state-loading", "data-state": "view-loading", "data-view": name },
    h("span", { class: "spinner", "aria-hidden": "true" }), "Loading figures…")];
}

function renderCampaigns(d) {
  if (!d.campaigns) return viewPending("campaigns");
  const { campaigns, currency } = d.campaigns;
  const cur = currency || "USD";
  const body = campaigns.length
    ? funnelTable("campaigns.campaigns", campaigns, [
      { key: "campaign_id", label: "Campaign" },
      { key: "status", label: "Status", cell: (r) => statusBadge(r.status) }], cur, (r) => `campaigns.${r.campaign_id}`)
    : h("p", { class: "muted empty-note", "data-empty": "campaigns" }, "No campaign messages in this range.");
  const out = [tag(card("Campaigns", campaigns.length ? h("div", {}, funnelLegend(), body) : body, { wide: true, csv: { endpoint: "campaigns", table: "campaigns" },
    note: [rangeNote(d.q), `estimated cost in ${cur}`, campaigns.length ? RATES_NOTE : null].filter(Boolean).join(" · ") }), "campaigns-list")];
  const errors = campaigns.flatMap((c) => c.by_error.map((e) => ({ campaign_id: c.campaign_id, ...e })));
  if (errors.length) {
    const failing = campaigns.filter((c) => c.by_error.length).length;
    out.push(tag(card("Failure reasons by campaign",
      h("p", { class: "muted empty-note" }, `${fmt.n(errors.length)} reason${errors.length === 1 ? "" : "s"} across ${fmt.n(failing)} campaign${failing === 1 ? "" : "s"} with failed messages, most failed first within each campaign.`),
      { wide: true, table: dataTable([
        { key: "campaign_id", label: "Campaign" }, { key: "error_code", label: "Code" },
        { key: "title", label: "Reason" }, { key: "count", label: "Failed", format: fmt.n }], errors, "campaigns.by_error") }), "campaigns-errors"));
  }
  return out;
}

const TEMPLATE_SERIES = [
  { key: "sent", label: "Sent" }, { key: "delivered", label: "Delivered" }, { key: "read", label: "Read" },
  { key: "replied", label: "Replied" }, { key: "failed", label: "Failed" },
];

const CATEGORY_LABEL = { marketing: "Marketing", utility: "Utility", authentication: "Authentication", service: "Service" };
const category = (v) => (v ? CATEGORY_LABEL[v] ?? v : "not given");

function renderTemplates(d) {
  if (!d.templates) return viewPending("templates");
  const { templates, currency } = d.templates;
  const cur = currency || "USD";
  const chosen = d.template;
  const names = [...new Set(templates.map((t) => t.template_name).filter(Boolean))];
  const out = [];
  if (!templates.length) {
    out.push(tag(card("Templates", h("p", { class: "muted empty-note", "data-empty": "templates" }, "No template messages in this range."),
      { wide: true, csv: { endpoint: "templates", table: "templates" }, note: rangeNote(d.q) }), "templates-list"));
    return out;
  }
  const pick = h("select", { id: "template-pick", "data-focus": "template-pick", onchange: (e) => chooseTemplate(e.target.value) },
    names.map((n) => h("option", { value: n, selected: chosen?.name === n }, n)));
  const timeline = chosen?.timeline || [];
  const costSeries = [{ key: "estimated_cost", label: `Estimated cost (${cur})`, format: (v) => money(v, cur), axisFormat: (v) => money(v, cur) }];
  const timelineCard = card(chosen ? `${chosen.name} over time` : "Template over time", h("div", {},
    h("label", { class: "pick" }, "Template", pick),
    timeChart("template", timeline, TEMPLATE_SERIES, d.q.granularity),
    timeChart("template-cost", timeline, costSeries, d.q.granularity)),
  { wide: true, csv: { endpoint: "templates", table: "timeline", params: () => ({ template: state.data?.template?.name }) },
    note: "All of the template's languages and categories.",
    table: dataTable([{ key: "date", label: "Date" }, ...TEMPLATE_SERIES.map((x) => ({ ...x, format: fmt.n })),
      { key: "estimated_cost", label: "Est. cost", format: (v) => money(v, cur) }], timeline, "templates.timeline") });
  out.push(tag(timelineCard, "templates-timeline"));
  const key = (r) => `${r.template_name}/${r.template_language}/${r.category}`;
  out.push(tag(card("Templates", h("div", {}, funnelLegend(), funnelTable("templates.templates", templates, [
    { key: "template_name", label: "Template", cell: (r) => (r.template_name
      ? h("button", { type: "button", class: "link pick-row", "data-template": r.template_name, "data-focus": `template:${key(r)}`,
        "aria-pressed": String(chosen?.name === r.template_name), title: "Show this template over time", onclick: () => chooseTemplate(r.template_name, true) }, r.template_name)
      : "not given") },
    { key: "template_language", label: "Language" },
    { key: "category", label: "Category", cell: (r) => category(r.category) }], cur, (r) => `templates.${key(r)}`,
  (r) => (chosen?.name === r.template_name ? "selected" : null))),
  { wide: true, csv: { endpoint: "templates", table: "templates" }, note: `${rangeNote(d.q)} · estimated cost in ${cur} · ${RATES_NOTE} Pick a template for its timeline.` }), "templates-list"));
  return out;
}

const PRICING_LABEL = { regular: "Billable", free_customer_service: "Free (customer service)", free_entry_point: "Free (entry point)" };
let regionNames = null;
function country(code) {
  if (!code || code === "unknown") return "Unknown";
  try {
    regionNames ??= new Intl.DisplayNames(["en"], { type: "region" });
    const name = regionNames.of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;
  }
}

function renderCosts(d) {
  if (!d.costs) return viewPending("costs");
  const c = d.costs, s = c.summary;
  const cur = s.currency || c.currency || "USD";
  const m = (v) => money(v, cur);
  const usdOnly = (v) => money(v, "USD");
  const unit = (v) => money(v, cur, true);
  const g = d.q.granularity;
  const hint = h("p", { class: `muted hint${s.unpriced_messages ? " warn" : ""}`, "data-hint": "rate-card" },
    s.unpriced_messages
      ? [`${fmt.n(s.unpriced_messages)} billable message${s.unpriced_messages === 1 ? " has" : "s have"} no price in the rate card and count as 0. The server's `, h("code", {}, "--rate-card"), " file sets Meta's prices."]
      : ["Meta's charges are estimated from the server's rate card (", h("code", {}, "--rate-card"), "); Meta changes its rates, so keep it current."]);
  const mixed = cur !== "USD" ? h("p", { class: "muted hint" }, `AI cost is in US dollars; the total adds it to the ${cur} estimate as it is.`) : null;
  const out = [
    tag(card("Spend", h("div", {},
      h("div", { class: "kpis" },
        kpi(`Estimated Meta spend (${cur})`, s.estimated_cost, m, "costs.summary.estimated_cost"),
        kpi("AI cost (USD)", s.ai_cost, usdOnly, "costs.summary.ai_cost"),
        kpi("Total", s.total_cost, m, "costs.summary.total_cost"),
        kpi("Per delivered message", s.cost_per_delivered, unit, "costs.summary.cost_per_delivered"),
        kpi("Per read message", s.cost_per_read, unit, "costs.summary.cost_per_read")),
      h("h4", { class: "kpis-head" }, "Messages by pricing"),
      h("div", { class: "kpis" },
        kpi("Billable", s.billable_messages, fmt.n, "costs.summary.billable_messages"),
        kpi("Free", s.free_messages, fmt.n, "costs.summary.free_messages"),
        kpi("Unpriced", s.unpriced_messages, fmt.n, "costs.summary.unpriced_messages")),
      hint, mixed),
    { wide: true, note: `${rangeNote(d.q)} · per delivered and per read message: Meta's estimate over the range's delivered and read outbound messages` }), "costs-summary"),
  ];
  const series = [
    { key: "estimated_cost", label: `Meta, estimated (${cur})`, format: m, axisFormat: m },
    { key: "ai_cost", label: "AI (USD)", format: usdOnly },
  ];
  const timeline = c.timeline || [];
  out.push(tag(card("Estimated cost over time", timeChart("costs", timeline, series, g),
    { wide: true, csv: { endpoint: "costs", table: "timeline" },
      table: dataTable([{ key: "date", label: "Date" },
        { key: "billable_messages", label: "Billable", format: fmt.n }, { key: "free_messages", label: "Free", format: fmt.n },
        { key: "estimated_cost", label: `Meta (${cur})`, format: m }, { key: "ai_cost", label: "AI (USD)", format: usdOnly },
        { key: "total_cost", label: "Total", format: m }], timeline, "costs.timeline") }), "costs-timeline"));
  const none = (what) => h("p", { class: "muted empty-note", "data-empty": what }, "No priced messages in this range.");
  const pair = h("div", { class: "pair" });
  out.push(pair);
  pair.append(tag(card("By pricing category", c.by_category.length ? dataTable([
    { key: "category", label: "Category", format: category },
    { key: "pricing_type", label: "Pricing", format: (v) => PRICING_LABEL[v] ?? v },
    { key: "messages", label: "Messages", format: fmt.n },
    { key: "estimated_cost", label: "Est. cost", format: m }], c.by_category, "costs.by_category") : none("by_category"),
  { csv: { endpoint: "costs", table: "by_category" } }), "costs-categories"));
  pair.append(tag(card("By recipient country", c.by_country.length ? dataTable([
    { key: "country", label: "Country", format: country },
    { key: "billable_messages", label: "Billable", format: fmt.n },
    { key: "free_messages", label: "Free", format: fmt.n },
    { key: "estimated_cost", label: "Est. cost", format: m }], c.by_country, "costs.by_country") : none("by_country"),
  { csv: { endpoint: "costs", table: "by_country" } }), "costs-countries"));
  return out;
}

// ---------- live ----------

let pollTimer = null;
let streamAbort = null;
let streamRetry = null;
let streamFailures = 0;

// Follow the organization's stream while the range includes now; ask again every 2 s only
// while the stream is down, and try the stream again meanwhile.
function updateLive() {
  const q = query();
  const el = $("live");
  if (!q.live || !state.data) {
    el.textContent = "";
    el.className = "live";
    el.title = "";
    stopLive();
    return;
  }
  el.textContent = "Live";
  el.className = "live on";
  el.title = pollTimer ? "The range includes now: figures are asked for again every 2 s (the live stream is unavailable)." : "The range includes now: figures follow new events.";
  if (!streamAbort && !streamRetry) followStream();
}

function stopLive() {
  streamAbort?.abort();
  streamAbort = null;
  clearTimeout(streamRetry);
  streamRetry = null;
  clearInterval(pollTimer);
  pollTimer = null;
}

function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(() => { if (document.visibilityState === "visible") load({ quiet: true }); }, 2000);
}

// One `update` event block of the stream: does it concern the figures on screen?
function concernsShown(block) {
  const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
  const account = $("account").value;
  try {
    const { accounts } = JSON.parse(data);
    return !account || !Array.isArray(accounts) || accounts.includes(account);
  } catch {
    return true;
  }
}

async function followStream() {
  const abort = new AbortController();
  streamAbort = abort;
  let debounce = null;
  try {
    const res = await fetch("/api/stream", { headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" }, signal: abort.signal });
    if (!res.ok || !res.body) throw new Error(`the stream answered ${res.status}`);
    if (pollTimer || streamFailures) {
      // Back on the stream: whatever happened while it was down is read once.
      clearInterval(pollTimer);
      pollTimer = null;
      load({ quiet: true });
    }
    streamFailures = 0;
    updateLive();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (/^event: ?update$/m.test(block) && concernsShown(block)) {
          clearTimeout(debounce);
          debounce = setTimeout(() => load({ quiet: true }), 100);
        }
      }
    }
  } catch { /* aborted, refused or dropped: handled below */ }
  if (abort.signal.aborted || streamAbort !== abort) return;
  streamAbort = null;
  streamFailures += 1;
  startPolling();
  updateLive();
  const wait = Math.min(30000, 2000 * 2 ** Math.min(streamFailures, 4));
  streamRetry = setTimeout(() => { streamRetry = null; if (query().live) followStream(); }, wait);
}

// ---------- controls ----------

function showControls() {
  $("controls").hidden = false;
  $("tabs").hidden = false;
  $("sign-out").hidden = readOnly;
}

function onRangeChange() {
  const kind = $("range").value;
  $("custom").hidden = kind !== "custom";
  if (kind === "custom" && !$("start").value) {
    const [s, e] = rangeDates("30d");
    $("start").value = s;
    $("end").value = e;
  }
  const [s, e] = rangeDates(kind);
  $("granularity").value = kind === "12m" ? "month" : granularityFor(s, e);
  refresh();
}

function refresh() {
  load().then(updateLive);
}

function selectTab(name, focus = false) {
  state.view = name;
  syncControls();
  for (const v of VIEWS) {
    const tab = $(`tab-${v}`);
    tab.setAttribute("aria-selected", String(v === name));
    tab.tabIndex = v === name ? 0 : -1;
    if (state.data) $(`view-${v}`).hidden = v !== name;
  }
  if (focus) $(`tab-${name}`).focus();
  requestAnimationFrame(resizeCharts);
  loadView(name);
}

// What a view has no use for is disabled while it is shown, saying why.
function syncControls() {
  const spend = SPEND.includes(state.view);
  $("compare").disabled = spend;
  $("compare-wrap").title = spend ? "Campaigns, templates and costs are not compared with a previous period." : "";
  $("granularity").disabled = state.view === "campaigns";
  $("granularity-wrap").title = state.view === "campaigns" ? "Campaigns are summed over the whole range." : "";
}

function signOut() {
  sessionStorage.removeItem(KEY_STORE);
  location.href = "/";
}

async function signIn(token) {
  state.token = token;
  state.org = await api("/api/org");
  $("org-name").textContent = state.org.name;
  $("org-tz").textContent = `Time zone: ${state.org.timezone}${readOnly ? " · shared view (read-only)" : ""}`;
  document.title = `${state.org.name} · whatstat`;
  try {
    const { accounts } = await api("/api/accounts");
    for (const a of accounts) $("account").append(h("option", { value: a.account_id }, a.name && a.name !== a.account_id ? `${a.name} (${a.account_id})` : a.account_id));
  } catch { /* a key limited to one account may not list them: "All" stays */ }
  showControls();
  $("sign-in").hidden = true;
  refresh();
}

function wire() {
  $("range").addEventListener("change", onRangeChange);
  for (const id of ["account", "granularity", "compare", "start", "end"]) $(id).addEventListener("change", refresh);
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  $("sign-out").addEventListener("click", signOut);
  const tabs = VIEWS;
  for (const v of tabs) {
    $(`tab-${v}`).addEventListener("click", () => selectTab(v));
    $(`tab-${v}`).addEventListener("keydown", (e) => {
      const i = tabs.indexOf(v);
      if (e.key === "ArrowRight") selectTab(tabs[(i + 1) % tabs.length], true);
      else if (e.key === "ArrowLeft") selectTab(tabs[(i + tabs.length - 1) % tabs.length], true);
    });
  }
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = $("key").value.trim();
    $("sign-in-error").textContent = "";
    try {
      await signIn(key);
      sessionStorage.setItem(KEY_STORE, key);
    } catch (err) {
      state.token = null;
      $("sign-in-error").textContent = err.status === 401 ? "This key is not accepted. Check it and try again." : `Could not sign in: ${err.message}`;
    }
  });
  let resizing = null;
  window.addEventListener("resize", () => { clearTimeout(resizing); resizing = setTimeout(resizeCharts, 100); });
  // Charts take their colours from the theme: redraw them when it changes.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => { resetCharts(); render(); });
}

async function start() {
  wire();
  if (!state.token) {
    $("sign-in").hidden = false;
    $("key").focus();
    return;
  }
  try {
    await signIn(state.token);
  } catch (e) {
    if (!readOnly && e.status === 401) {
      sessionStorage.removeItem(KEY_STORE);
      $("sign-in").hidden = false;
      $("sign-in-error").textContent = "The saved key is no longer accepted. Sign in again.";
      return;
    }
    setState("error", e, null);
  }
}

start();
