// Comparing runs: a checkbox on each row of the runs list, a Compare button (2 to 20 picked), and the page
// #/compare?name=A&name=B (GET /runs/compare): the overrides and the resolved config keys that differ, the
// final metrics and the duration of each run, one table per section, one column per run.
// Names are carried as repeated, URI-encoded `name` parameters and never split on commas (a name may hold one).
// Everything the server says is put on the page as text, never as HTML.

import { getJSON } from "./api.js";
import { number } from "./chart.js";

export const MIN_RUNS = 2;
export const MAX_RUNS = 20;
const $ = (id) => document.getElementById(id);
const picked = new Set(); // the run names ticked in the runs list, kept across pages and refreshes

function cell(tag, text, cls) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  node.textContent = text == null ? "" : String(text);
  return node;
}

/** The query part for these names: `name=A&name=B`, each encoded on its own. */
export function compareQuery(names) {
  return names.map((n) => `name=${encodeURIComponent(n)}`).join("&");
}

// --- picking in the runs list -------------------------------------------------------------------------------

function updateButton() {
  const button = $("compare-button");
  const n = picked.size;
  button.disabled = n < MIN_RUNS || n > MAX_RUNS;
  button.textContent = n ? `Compare (${n})` : "Compare";
  button.title = n > MAX_RUNS ? `pick at most ${MAX_RUNS} runs` : `pick ${MIN_RUNS} to ${MAX_RUNS} runs`;
}

/** The first cell of a runs-list row: a checkbox that picks the run for comparing. */
export function pickCell(name) {
  const box = document.createElement("input");
  box.type = "checkbox";
  box.className = "pick";
  box.checked = picked.has(name);
  box.setAttribute("aria-label", `pick ${name} to compare`);
  box.addEventListener("change", () => {
    if (box.checked) picked.add(name);
    else picked.delete(name);
    updateButton();
  });
  const td = cell("td", "", "pick");
  td.append(box);
  return td;
}

export function setupCompare() {
  $("compare-button").addEventListener("click", () => {
    if (picked.size >= MIN_RUNS && picked.size <= MAX_RUNS) location.hash = `#/compare?${compareQuery([...picked])}`;
  });
  updateButton();
}

// --- the compare page ---------------------------------------------------------------------------------------

let shown = []; // the names on the page, in the order asked

/** Opens #/compare?name=A&name=B: `query` is what follows the "?". */
export function openCompare(query) {
  shown = new URLSearchParams(query).getAll("name");
  $("compare-error").textContent = "";
  for (const id of ["compare-overrides", "compare-config", "compare-metrics", "compare-runs"]) $(id).replaceChildren();
}

function valueText(value, present) {
  if (!present) return "(not set)";
  if (typeof value === "number") return number(value);
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

/** A table: a header row (the key's column, then one column per run), then one row per difference. */
function table(id, runs, rows, empty) {
  const head = document.createElement("tr");
  head.append(cell("th", "Key"), ...runs.map((r) => cell("th", r.run.name)));
  const body = rows.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.key = d.key;
    tr.append(cell("td", d.key, "key"), ...d.values.map((v, i) => cell("td", valueText(v, d.present[i]))));
    return tr;
  });
  if (!body.length) {
    const tr = document.createElement("tr");
    const td = cell("td", empty, "muted");
    td.colSpan = runs.length + 1;
    tr.append(td);
    body.push(tr);
  }
  $(id).replaceChildren(cell("thead", ""), cell("tbody", ""));
  $(id).tHead.append(head);
  $(id).tBodies[0].append(...body);
}

function runsTable(runs) {
  const head = document.createElement("tr");
  head.append(cell("th", ""), ...runs.map((r) => {
    const th = cell("th", "");
    const link = document.createElement("a");
    link.href = `#/runs/${encodeURIComponent(r.run.name)}`;
    link.textContent = r.run.name;
    th.append(link);
    return th;
  }));
  const row = (label, texts) => {
    const tr = document.createElement("tr");
    tr.append(cell("td", label, "key"), ...texts.map((t) => cell("td", t)));
    return tr;
  };
  $("compare-runs").replaceChildren(cell("thead", ""), cell("tbody", ""));
  $("compare-runs").tHead.append(head);
  $("compare-runs").tBodies[0].append(
    row("Status", runs.map((r) => r.run.status)),
    row("Owner", runs.map((r) => r.run.owner ?? "-")),
    row("Duration", runs.map((r) => seconds(r.duration_s))),
    row("Config read", runs.map((r) => (r.config_found ? "yes" : "no"))),
  );
}

function seconds(s) {
  if (s == null) return "never started";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m ${s % 60}s` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

export async function refreshCompare() {
  const names = shown;
  if (names.length < MIN_RUNS || names.length > MAX_RUNS) {
    $("compare-error").textContent = `Pick ${MIN_RUNS} to ${MAX_RUNS} runs in the runs list to compare them.`;
    return;
  }
  let answer;
  try {
    answer = await getJSON(`/runs/compare?${compareQuery(names)}`);
  } catch (err) {
    if (err.status !== 404 && err.status !== 422) throw err;
    $("compare-error").textContent = err.message;
    return;
  }
  if (names !== shown) return;
  runsTable(answer.runs);
  table("compare-overrides", answer.runs, answer.overrides, "The runs were asked the same overrides.");
  table("compare-config", answer.runs, answer.config, "No resolved config key differs (or too few configs were read).");
  table("compare-metrics", answer.runs, answer.metrics, "No final metrics yet.");
}
