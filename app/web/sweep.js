// The sweep page (#/sweeps/<name>): its counts, the best run so far, and a table of its runs (index, status,
// the swept lines, final val_loss), refreshed in place; Cancel stops every queued and running run of it.
// Everything the server says is put on the page as text, never as HTML.

import { getJSON, sendJSON } from "./api.js";

const $ = (id) => document.getElementById(id);

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text == null ? "" : String(text);
  return td;
}

function loss(value) {
  return typeof value === "number" ? value.toPrecision(4) : "";
}

let shown = null; // the sweep's name on the page

export function openSweep(name) {
  shown = name;
  $("sweep-name").textContent = name;
  $("sweep-error").textContent = "";
  $("sweep-summary").textContent = "";
  $("sweep-rows").replaceChildren();
}

export async function refreshSweep() {
  const name = shown;
  if (!name) return;
  let sweep;
  try {
    sweep = await getJSON(`/sweeps/${encodeURIComponent(name)}`);
  } catch (err) {
    if (err.status !== 404) throw err;
    $("sweep-error").textContent = err.message;
    return;
  }
  if (name !== shown) return;
  const counts = Object.entries(sweep.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ");
  const best = sweep.best ? ` · best: #${sweep.best.index} (val_loss ${loss(sweep.best.val_loss)})` : "";
  $("sweep-summary").textContent = `${sweep.size} runs: ${counts}${best} · ${sweep.overrides.join(" ")}`;
  $("sweep-cancel").disabled = sweep.finished;
  const rows = sweep.runs.map((run) => {
    const tr = document.createElement("tr");
    const link = document.createElement("a");
    link.href = `#/runs/${encodeURIComponent(run.name)}`;
    link.textContent = run.name;
    const name = cell("", "name");
    name.append(link);
    const status = cell(run.status, `status status-${run.status}`);
    const isBest = sweep.best && sweep.best.name === run.name;
    tr.append(cell(run.index, "num"), status, cell(run.overrides.join(" "), "overrides"), cell(loss(run.val_loss) + (isBest ? " ★" : ""), "num"), name, cell(run.reason || ""));
    return tr;
  });
  $("sweep-rows").replaceChildren(...rows);
}

export function setupSweepView() {
  $("sweep-cancel").addEventListener("click", async () => {
    if (!shown) return;
    try {
      await sendJSON("POST", `/sweeps/${encodeURIComponent(shown)}/cancel`, {});
      await refreshSweep();
    } catch (err) {
      $("sweep-error").textContent = err.message;
    }
  });
}

// --- the sweeps list (#/sweeps): newest first, a page at a time, each linking to its sweep's page ----------

let sweepsBefore = []; // the `before` of each page shown so far: Newer goes back one

function sweepRow(sweep) {
  const tr = document.createElement("tr");
  tr.dataset.name = sweep.name;
  const link = document.createElement("a");
  link.href = `#/sweeps/${encodeURIComponent(sweep.name)}`;
  link.textContent = sweep.name;
  const name = cell("", "name");
  name.append(link);
  const counts = Object.entries(sweep.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ");
  const state = sweep.finished ? "finished" : "active";
  tr.append(
    name,
    cell(sweep.owner || ""),
    cell(sweep.size, "num"),
    cell(counts, "counts"),
    cell(state, `state state-${state}`),
    cell(new Date(sweep.created_at).toLocaleString()),
    cell(sweep.overrides.join(" "), "overrides"),
  );
  return tr;
}

export async function refreshSweeps() {
  const before = sweepsBefore[sweepsBefore.length - 1];
  const query = new URLSearchParams({ limit: "50" });
  if (before != null) query.set("before", String(before));
  const page = await getJSON(`/sweeps?${query}`);
  $("sweeps-rows").replaceChildren(...page.data.map(sweepRow));
  $("sweeps-empty").hidden = page.data.length > 0;
  $("sweeps-older").disabled = page.next_before == null;
  $("sweeps-older").dataset.next = page.next_before ?? "";
  $("sweeps-newer").disabled = sweepsBefore.length === 0;
}

export function setupSweepsView() {
  $("sweeps-older").addEventListener("click", () => {
    const next = $("sweeps-older").dataset.next;
    if (next) sweepsBefore.push(Number(next));
    refreshSweeps();
  });
  $("sweeps-newer").addEventListener("click", () => {
    sweepsBefore.pop();
    refreshSweeps();
  });
}
