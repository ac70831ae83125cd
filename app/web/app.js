// The dashboard: three views on the public API, chosen by the URL's hash.
//   #/              runs: submit form, filters, the runs table (newest first, paged)
//   #/queue         the queue with positions, the GPU map from /healthz, and the reservations not over
//   #/runs/<name>   one run: details, loss curves, the log following live, its files, Cancel / Rerun / Delete
//   #/sweeps        the sweeps, newest first (sweep.js)
//   #/sweeps/<name> one sweep: counts, best run, its runs with their final losses (sweep.js)
//   #/settings      your notification destinations and default events (settings.js)
//   #/compare?name=A&name=B  runs side by side, picked in the runs list (compare.js)
// Each view refreshes itself on a timer and updates the page in place (rows are kept and only changed cells
// are rewritten), so nothing flickers and the filter, the scroll position and a text selection survive.
// Everything the server says is put on the page as text, never as HTML.

import { ApiError, forgetToken, getJSON, idempotencyKey, request, sendJSON, token } from "./api.js";
import { colorOf, drawChart, number } from "./chart.js";
import { openCompare, pickCell, refreshCompare, setupCompare } from "./compare.js";
import { openSettings, refreshSettings, setupSettingsView } from "./settings.js";
import { openSweep, refreshSweep, refreshSweeps, setupSweepView, setupSweepsView } from "./sweep.js";

const REFRESH_MS = { runs: 3000, queue: 3000, run: 2000, sweep: 3000, sweeps: 5000, settings: 5000, compare: 5000 };
const LOG_KEEP_CHARS = 1 << 20; // the log pane keeps the last ~1 MiB
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

// --- small helpers ------------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function setText(node, text) {
  const value = text == null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

function setAttr(node, name, value) {
  if (value == null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) node.setAttribute(name, value);
}

function runHref(name) {
  return `#/runs/${encodeURIComponent(name)}`;
}

function ms(ts) {
  return ts ? Date.parse(ts) : null;
}

export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function ago(ts) {
  const t = ms(ts);
  return t == null ? "" : `${duration((Date.now() - t) / 1000)} ago`;
}

function localTime(ts) {
  const t = ms(ts);
  return t == null ? "" : new Date(t).toLocaleString();
}

function runDuration(run) {
  const started = ms(run.started_at);
  if (started == null) return null;
  const end = ms(run.finished_at) ?? Date.now();
  return (end - started) / 1000;
}

function gpuText(run) {
  return run.gpus && run.gpus.length ? run.gpus.join(",") : run.status === "queued" ? "" : "cpu";
}

function owner(run) {
  return run.owner ?? "-";
}

function lossText(run, key) {
  const v = run.metrics ? run.metrics[key] : null;
  return typeof v === "number" ? number(v) : "";
}

function statusBadge(node, status) {
  setText(node, status);
  setAttr(node, "class", `status status-${status}`);
}

function connection(error) {
  const conn = $("conn");
  if (error) {
    setText(conn, error.status === 0 ? "offline: retrying" : `error: ${error.message}`);
    setAttr(conn, "class", "conn conn-bad");
  } else {
    setText(conn, `updated ${new Date().toLocaleTimeString()}`);
    setAttr(conn, "class", "conn");
  }
  $("signout").hidden = !token();
}

/** Run `fn` now and every `every` ms after it finished (slower while the tab is hidden); returns stop(). */
function poll(fn, every) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
      connection(null);
    } catch (err) {
      if (!(err instanceof ApiError)) console.error(err);
      connection(err);
    }
    if (!stopped) timer = setTimeout(tick, document.hidden ? every * 5 : every);
  };
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    now() {
      clearTimeout(timer);
      tick();
    },
  };
}

/** A button that needs a second click within 4 s ("Really cancel?"), for what cannot be undone. */
function confirmTwice(button, question, action) {
  let armed = null;
  const label = button.textContent;
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = question;
      button.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove("armed");
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove("armed");
    await action();
  });
}

// --- the runs view ------------------------------------------------------------------------------------------

const FILTER_KEY = "labrun.filters";
const runsState = {
  filters: { status: "", owner: "", limit: "50", ...JSON.parse(sessionStorage.getItem(FILTER_KEY) || "{}") },
  before: null, // the cursor of the page shown (null: the first page)
  cursors: [], // the cursors of the newer pages, to go back
  nextBefore: undefined, // undefined: the server pages no further than `limit`
  rows: new Map(),
};

function runsQuery() {
  const { status, owner: who, limit } = runsState.filters;
  const params = new URLSearchParams({ limit });
  if (status) params.set("status", status);
  if (who) params.set("owner", who);
  if (runsState.before != null) params.set("before", runsState.before);
  return `/runs?${params}`;
}

async function refreshRuns() {
  const answer = await getJSON(runsQuery());
  const who = runsState.filters.owner;
  // A server without owner filtering ignores owner=: the page then filters what it got.
  const data = who && who !== "me" ? answer.data.filter((r) => owner(r) === who) : answer.data;
  renderRows($("runs-table").tBodies[0], runsState.rows, data, fillRunRow);
  $("runs-empty").hidden = data.length > 0;
  runsState.nextBefore = "next_before" in answer ? answer.next_before : undefined;
  const page = runsState.cursors.length + 1;
  setText($("runs-count"), `${answer.count} run${answer.count === 1 ? "" : "s"}`);
  setText($("page-label"), runsState.nextBefore === undefined && page === 1 ? "" : `page ${page}`);
  $("page-older").hidden = runsState.nextBefore === undefined;
  $("page-older").disabled = runsState.nextBefore == null;
  $("page-newer").hidden = runsState.nextBefore === undefined && runsState.before == null;
  $("page-newer").disabled = runsState.before == null;
}

/** Keep one <tr> per run name: update cells in place, add and drop rows, reorder only what moved. */
function renderRows(tbody, rows, data, fill) {
  const seen = new Set();
  data.forEach((run, i) => {
    seen.add(run.name);
    let tr = rows.get(run.name);
    if (!tr) {
      tr = fill(null, run);
      rows.set(run.name, tr);
    } else {
      fill(tr, run);
    }
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
  for (const [name, tr] of rows) {
    if (!seen.has(name)) {
      tr.remove();
      rows.delete(name);
    }
  }
}

function fillRunRow(tr, run) {
  if (!tr) {
    tr = el("tr");
    tr.dataset.name = run.name;
    const link = el("a", { href: runHref(run.name) });
    const bar = el("progress", { max: "1" });
    tr.append(
      pickCell(run.name),
      el("td", {}, el("span", { class: "status" })),
      el("td", { class: "owner" }),
      el("td", { class: "name" }, link),
      el("td", { class: "gpus" }),
      el("td", { class: "progress" }, bar, el("span", { class: "progress-text" })),
      el("td", { class: "started" }),
      el("td", { class: "duration" }),
      el("td", { class: "num train-loss" }),
      el("td", { class: "num val-loss" }),
    );
  }
  const [, status, who, name, gpus, progress, started, took, train, val] = tr.children;
  statusBadge(status.firstChild, run.stalled ? "stalled" : run.status);
  setText(who, owner(run));
  setText(name.firstChild, run.name);
  setAttr(name.firstChild, "title", run.overrides.join(" "));
  setText(gpus, gpuText(run));
  const bar = progress.querySelector("progress");
  const fraction = run.progress && typeof run.progress.fraction === "number" ? run.progress.fraction : null;
  const done = run.status === "succeeded";
  bar.hidden = run.status === "queued";
  if (done || fraction != null) setAttr(bar, "value", done ? 1 : fraction);
  else bar.removeAttribute("value");
  setText(progress.querySelector(".progress-text"), progressText(run, fraction));
  setText(started, ago(run.started_at));
  setAttr(started, "title", localTime(run.started_at) || null);
  setText(took, run.status === "queued" ? `waiting ${duration((Date.now() - ms(run.created_at)) / 1000)}` : duration(runDuration(run)));
  setText(train, lossText(run, "train_loss"));
  setText(val, lossText(run, "val_loss"));
  return tr;
}

function progressText(run, fraction) {
  if (run.status === "queued") return run.queue_position ? `queued #${run.queue_position}` : "queued";
  const p = run.progress || {};
  const parts = [];
  if (typeof p.epoch === "number" && typeof p.max_epochs === "number") {
    parts.push(`ep ${Math.min(p.epoch + (run.status === "running" ? 1 : 0), p.max_epochs)}/${p.max_epochs}`);
  }
  if (fraction != null) parts.push(`${Math.round(fraction * 100)}%`);
  return parts.join(" · ");
}

function setupRunsView() {
  const f = runsState.filters;
  $("filter-status").value = f.status;
  $("filter-owner").value = f.owner;
  $("filter-limit").value = f.limit;
  const changed = () => {
    f.status = $("filter-status").value;
    f.owner = $("filter-owner").value.trim();
    f.limit = $("filter-limit").value;
    sessionStorage.setItem(FILTER_KEY, JSON.stringify(f));
    runsState.before = null;
    runsState.cursors = [];
    current?.poller.now();
  };
  $("filter-status").addEventListener("change", changed);
  $("filter-limit").addEventListener("change", changed);
  let typing = null;
  $("filter-owner").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(changed, 300);
  });
  $("page-older").addEventListener("click", () => {
    if (runsState.nextBefore == null) return;
    runsState.cursors.push(runsState.before);
    runsState.before = runsState.nextBefore;
    current?.poller.now();
  });
  $("page-newer").addEventListener("click", () => {
    runsState.before = runsState.cursors.length ? runsState.cursors.pop() : null;
    current?.poller.now();
  });

  $("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("submit-button");
    const error = $("submit-error");
    const overrides = $("overrides")
      .value.split("\n")
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith("#"));
    setText(error, "");
    $("overrides").removeAttribute("aria-invalid");
    setText($("submit-result"), "submitting…");
    button.disabled = true;
    try {
      const priority = $("priority").value;
      const body = { overrides, priority };
      const limit = $("time-limit").value.trim();
      if (limit) body.time_limit = limit; // the server reads 6h, 90m, seconds: its 422 says what it takes
      const run = await sendJSON("POST", "/runs", body, { "Idempotency-Key": idempotencyKey() });
      const result = $("submit-result");
      result.replaceChildren("queued ", el("a", { href: runHref(run.name), text: run.name }));
      current?.poller.now();
    } catch (err) {
      setText($("submit-result"), "");
      setText(error, err.message);
      $("overrides").setAttribute("aria-invalid", "true");
    } finally {
      button.disabled = false;
    }
  });
}

// --- queue and GPUs -----------------------------------------------------------------------------------------

const queueRows = new Map();

/** A run's priority class (docs: priorities); records from before classes existed are normal. */
function runClass(run) {
  return run.priority || "normal";
}

/** The caller's budgets (GET /me/usage): "Your budget: 12.3 of 500 GPU-hours in the last 30 days". */
function budgetText(mine) {
  const parts = ((mine && mine.budgets) || [])
    .filter((b) => b.budget_hours != null || b.used_hours > 0)
    .map((b) => {
      const unit = b.pool === "gpu" ? "GPU-hours" : "CPU-hours";
      const of = b.budget_hours != null ? ` of ${b.budget_hours}` : "";
      return `${b.used_hours.toFixed(1)}${of} ${unit} in the last ${b.window_days} days${b.over ? " (over budget: your runs start as low)" : ""}`;
    });
  return parts.length ? `Your use: ${parts.join("; ")}` : "";
}

async function refreshQueue() {
  const [health, running, queued, mine, reservations] = await Promise.all([
    healthz(),
    getJSON("/runs?status=running&limit=1000"),
    getJSON("/runs?status=queued&limit=1000"),
    getJSON("/me/usage").catch(() => null),
    getJSON("/reservations").catch(() => ({ data: [] })), // (a server without them: no section)
  ]);
  setText($("queue-budget"), budgetText(mine));
  renderReservations(reservations.data || []);
  const banner = $("health");
  banner.hidden = health.status === "ok";
  setText(banner, health.status === "ok" ? "" : `Degraded: ${health.detail}`);

  const onGpu = new Map();
  for (const run of running.data) for (const g of run.gpus || []) onGpu.set(g, run);
  renderGpuMap(health.gpus || [], onGpu, outsideOf(health));

  const cpu = running.data.filter((r) => !(r.gpus && r.gpus.length));
  const cpuBox = $("cpu-runs");
  const cpuText = cpu.length ? `On the CPU: ${cpu.map((r) => `${r.name} (${owner(r)}, ${runClass(r)})`).join(", ")}` : "";
  if (cpuBox.textContent !== cpuText) {
    cpuBox.replaceChildren(...(cpu.length ? [el("span", { class: "muted", text: "On the CPU: " })] : []));
    cpu.forEach((r, i) => cpuBox.append(...(i ? [", "] : []), el("a", { href: runHref(r.name), text: r.name }), ` (${owner(r)}, ${runClass(r)})`));
  }

  const rows = [...queued.data].sort((a, b) => (a.queue_position ?? 1e9) - (b.queue_position ?? 1e9));
  renderRows($("queue-table").tBodies[0], queueRows, rows, fillQueueRow);
  $("queue-empty").hidden = rows.length > 0;
  const reason = rows.find((r) => r.waiting_reason)?.waiting_reason;
  $("queue-reason").hidden = !reason;
  setText($("queue-reason"), reason ? `Runs wait: ${reason}` : "");
}

/** One row per reservation not over (docs: reservations): its GPUs, window, users and the runs on its GPUs. */
function renderReservations(found) {
  $("reservations").hidden = !found.length;
  const rows = found.map((r) => {
    const runs = (r.runs || []).map((x) => `${x.run} (${x.owner ?? "?"})`).join(", ");
    const cells = [r.id, r.phase, r.gpus.join(","), r.start, r.end, r.owner, r.users.join(", "), runs, r.note || ""];
    return el("tr", { "data-id": String(r.id), class: `reservation ${r.phase}` }, ...cells.map((c) => el("td", { text: String(c) })));
  });
  const body = $("reservations-table").tBodies[0];
  const text = rows.map((tr) => tr.textContent).join("\n");
  if (body.dataset.text !== text) {
    body.replaceChildren(...rows);
    body.dataset.text = text;
  }
}

const gpuTiles = new Map();

/** GPU -> the processes outside labrun that keep it from runs (the GPU guard's last look, in /healthz). */
function outsideOf(health) {
  const outside = new Map();
  for (const p of (health.gpu_guard && health.gpu_guard.outside) || []) {
    if (p.ignored_by == null) outside.set(p.gpu, [...(outside.get(p.gpu) || []), p]);
  }
  return outside;
}

/** One tile per GPU, kept across refreshes like the table rows: the run on it (and its owner), busy
 * outside labrun (who holds it), or free. */
function renderGpuMap(gpus, onGpu, outside = new Map()) {
  const map = $("gpu-map");
  const none = map.querySelector(".no-gpus");
  if (!gpus.length) {
    if (!none) map.replaceChildren(el("p", { class: "muted no-gpus", text: "This server has no GPUs: runs use the CPU." }));
    gpuTiles.clear();
    return;
  }
  none?.remove();
  gpus.forEach((g, i) => {
    let tile = gpuTiles.get(g);
    if (!tile) {
      tile = el("div", { class: "gpu-tile", "data-gpu": String(g) }, el("div", { class: "gpu-id", text: `GPU ${g}` }), el("a", { class: "gpu-run" }), el("div", { class: "muted gpu-meta" }), el("progress", { max: "1" }));
      gpuTiles.set(g, tile);
    }
    if (map.children[i] !== tile) map.insertBefore(tile, map.children[i] || null);
    const run = onGpu.get(g);
    const held = !run && outside.get(g);
    const [, link, meta, bar] = tile.children;
    setAttr(tile, "class", `gpu-tile ${run ? "busy" : held ? "outside" : "free"}`);
    link.hidden = bar.hidden = !run;
    setText(link, run ? run.name : "");
    setAttr(link, "href", run ? runHref(run.name) : null);
    setAttr(link, "title", run ? run.name : null);
    setAttr(tile, "title", held ? held.map((p) => p.reason).join("; ") : null);
    const heldText = held ? `outside labrun: ${held.map((p) => `${p.user} · pid ${p.pid} · ${p.used_mb ?? "?"} MiB`).join(", ")}` : "free";
    setText(meta, run ? `${owner(run)} · ${runClass(run)} · ${duration(runDuration(run))}` : heldText);
    const fraction = run && run.progress && typeof run.progress.fraction === "number" ? run.progress.fraction : null;
    if (fraction != null) setAttr(bar, "value", fraction);
    else bar.removeAttribute("value");
  });
  for (const [g, tile] of gpuTiles) {
    if (!gpus.includes(g)) {
      tile.remove();
      gpuTiles.delete(g);
    }
  }
}

async function healthz() {
  // 503 still carries the health body (status "degraded"); read it rather than fail.
  try {
    return await (await request("GET", "/healthz")).json();
  } catch (err) {
    if (err.status === 503) return { status: "degraded", detail: err.message, gpus: [] };
    throw err;
  }
}

/** A queued run's estimated start (docs/budgets-and-estimates.md): "now", "in ~40m", or "?" (none). */
function estimateText(run) {
  const at = run.estimate && run.estimate.start_at;
  if (!run.estimate) return "";
  if (!at) return "?";
  const seconds = (ms(at) - Date.now()) / 1000;
  return seconds < 30 ? "now" : `in ~${duration(seconds)}`;
}

function fillQueueRow(tr, run) {
  if (!tr) {
    tr = el("tr");
    tr.dataset.name = run.name;
    tr.append(el("td", { class: "num position" }), el("td", { class: "owner" }), el("td", { class: "priority" }), el("td", { class: "name" }, el("a", { href: runHref(run.name) })), el("td"), el("td", { class: "estimate" }), el("td", { class: "overrides" }));
  }
  const [pos, who, cls, name, waiting, starts, overrides] = tr.children;
  setText(pos, run.queue_position ?? "");
  setText(who, owner(run));
  setText(cls, runClass(run));
  setText(name.firstChild, run.name);
  setText(waiting, duration((Date.now() - ms(run.created_at)) / 1000));
  setText(starts, estimateText(run));
  setAttr(starts, "title", run.estimate ? `${run.estimate.reason} (${run.estimate.sure} confidence)` : null);
  setText(overrides, run.overrides.join(" "));
  return tr;
}

// --- one run ------------------------------------------------------------------------------------------------

let runPage = null; // {name, run, logEnd, metricsTag, curves}

function openRun(name) {
  runPage = { name, run: null, logEnd: null, metricsTag: null, curves: {}, ended: false, finalRead: false };
  setText($("run-name"), name);
  setText($("run-error"), "");
  setText($("run-status"), "");
  $("run-details").replaceChildren();
  setText($("run-overrides"), "");
  $("log").replaceChildren();
  setText($("log-note"), "");
  $("run-files").replaceChildren();
  setText($("run-files-note"), "");
  $("run-files-panel").open = false;
  setText($("chart-note"), "");
  $("chart-legend").replaceChildren();
  drawChart($("chart"), {});
}

async function refreshRun() {
  const page = runPage;
  if (!page) return;
  const path = `/runs/${encodeURIComponent(page.name)}`;
  if (!page.ended || !page.run) {
    let run;
    try {
      run = await getJSON(path);
    } catch (err) {
      if (err.status === 404) {
        setText($("run-error"), err.message);
        page.ended = page.finalRead = true;
        return;
      }
      throw err;
    }
    if (page !== runPage) return;
    page.run = run;
    renderRun(run);
  }
  if (page.finalRead) return;
  const ended = TERMINAL.has(page.run.status);
  const [, partial] = await Promise.all([refreshLog(page), refreshCurves(page)]);
  if (ended && !partial) { // a partial curve (a big file still being read) is followed by the full one
    page.ended = true;
    page.finalRead = true; // one read after the end: the last lines and the last rows are in
  }
}

/** "6h 0m (2h 10m left, at 18:40)" for a running run; "" without a limit (docs/time-limits.md). */
function timeLimitText(run) {
  if (!run.time_limit_s) return "";
  let text = duration(run.time_limit_s);
  if (run.status === "running" && run.time_limit_at) {
    text += ` (${duration((ms(run.time_limit_at) - Date.now()) / 1000)} left, at ${localTime(run.time_limit_at)})`;
  } else if (run.ran_s) {
    text += ` (ran ${duration(run.ran_s)} before this attempt)`;
  }
  return text;
}

function renderRun(run) {
  statusBadge($("run-status"), run.stalled ? "stalled" : run.status);
  const active = run.status === "queued" || run.status === "running";
  $("run-cancel").disabled = !active;
  $("run-extend").hidden = !run.stalled; // docs/stalls.md: its owner or an admin keeps it
  $("run-extend").disabled = !run.stalled;
  $("run-delete").disabled = active || !!run.deleted_at;
  $("run-more-time").hidden = !(active && run.time_limit_s); // docs/time-limits.md
  const resumable = (run.status === "failed" || run.status === "cancelled") && !run.deleted_at;
  $("run-resume").hidden = !resumable;
  $("run-resume").disabled = !resumable;
  const p = run.progress || {};
  const fields = [
    ["Status", run.status + (run.queue_position ? ` (#${run.queue_position} in the queue)` : "")],
    ["Reason", run.reason || run.waiting_reason],
    ["Starts", run.estimate ? `${estimateText(run)}${run.estimate.start_at ? ` (${localTime(run.estimate.start_at)})` : ""}, ${run.estimate.sure} confidence: ${run.estimate.reason}` : ""],
    ["Runs as", run.runs_as ? `${run.runs_as}: ${run.runs_as_reason || ""}` : ""],
    ["Stalled", run.stall ? `${run.stall.message}; cancelled at ${localTime(run.stall.cancel_at)} unless extended` : ""],
    ["Time limit", timeLimitText(run)],
    ["Defaults", (run.default_overrides || []).join(" ")],
    ["Phase", run.status === "running" && p.phase ? `${p.phase}${typeof p.phase_total === "number" ? ` ${p.phase_done ?? 0} / ${p.phase_total}` : ""}` : ""],
    ["Exit code", run.exit_code],
    ["Owner", owner(run)],
    ["GPUs", gpuText(run) || "–"],
    ["Progress", run.status === "queued" ? "" : progressText(run, typeof p.fraction === "number" ? p.fraction : null)],
    ["Step", typeof p.step === "number" ? `${p.step}${typeof p.total === "number" ? ` / ${p.total}` : ""}` : ""],
    ["Train loss", lossText(run, "train_loss")],
    ["Val loss", lossText(run, "val_loss")],
    ["Submitted", localTime(run.created_at)],
    ["Started", localTime(run.started_at)],
    ["Finished", localTime(run.finished_at)],
    ["Duration", duration(runDuration(run))],
    ["Run directory", run.run_dir],
    ["WandB run", run.name],
    ["Config", run.config_name],
    ["Priority", run.priority && run.priority !== "normal" ? run.priority : ""],
    ["Attempt", run.attempts > 1 ? String(run.attempts) : ""],
    ["Rerun of", run.rerun_of],
    ["Waits for", afterText(run)],
    ["Starts from", run.init_from ? `${run.init_from}'s last checkpoint (init_from)` : ""],
    ["Sweep", run.sweep ? `${run.sweep} (run #${run.sweep_index}; its page: #/sweeps/<name>)` : ""],
    ["Disk", run.disk_bytes != null ? bytes(run.disk_bytes) : ""],
    ["Deleted", run.deleted_at ? `${localTime(run.deleted_at)}${run.deleted_by ? ` by ${run.deleted_by}` : ""}` : ""],
  ].filter(([, v]) => v !== "" && v != null);
  const dl = $("run-details");
  const want = fields.map(([k, v]) => `${k}\u0000${v}`).join("\u0001");
  if (dl.dataset.shown !== want) {
    dl.dataset.shown = want;
    dl.replaceChildren(
      ...fields.flatMap(([k, v]) => {
        const dd = el("dd", { "data-field": k });
        if (k === "Rerun of") dd.append(el("a", { href: runHref(v), text: v }));
        else if (k === "Starts from") dd.append(el("a", { href: runHref(run.init_from), text: v }));
        else dd.textContent = String(v);
        return [el("dt", { text: k }), dd];
      }),
    );
  }
  setText($("run-overrides"), run.overrides.length ? run.overrides.join("\n") : "(none: the defaults)");
  if (run.log_tail && !$("log").textContent) setText($("log-note"), "the log's last lines, kept with the run");
}

// What a run waits for (docs/run-chains.md): "run A succeeded (running); sweep S ended (ended, done)".
function afterText(run) {
  return (run.after || []).map((d) => {
    const kind = d.sweep ? "sweep" : "run";
    const state = d.state ? ` (${d.state}${d.satisfied ? ", done" : ""})` : "";
    return `${kind} ${d[kind]} ${d.when}${state}`;
  }).join("; ");
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// --- a run's files: listed when the panel is opened; a download goes through fetch (it carries the token)

function filesPath(name) {
  return `/runs/${encodeURIComponent(name)}`;
}

async function refreshFiles(page) {
  try {
    const body = await getJSON(`${filesPath(page.name)}/files`);
    if (page !== runPage) return;
    $("run-files").replaceChildren(
      ...body.files.map((f) => {
        const href = `${filesPath(page.name)}/files/${f.path.split("/").map(encodeURIComponent).join("/")}`;
        return el("li", { "data-path": f.path }, downloadLink(href, f.path, f.path.split("/").pop()), ` ${bytes(f.size)}`);
      }),
    );
    setText($("run-files-note"), [`${body.count} files, ${bytes(body.total_bytes)}`, ...body.notes].join("; "));
  } catch (err) {
    setText($("run-files-note"), err.message);
  }
}

function downloadLink(href, label, filename) {
  const a = el("a", { href, text: label, download: filename });
  a.addEventListener("click", (event) => {
    event.preventDefault();
    download(href, filename).catch((err) => setText($("run-files-note"), err.message));
  });
  return a;
}

async function download(href, filename) {
  const response = await request("GET", href, { headers: { Accept: "*/*" } });
  const url = URL.createObjectURL(await response.blob());
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function refreshLog(page) {
  const base = `/runs/${encodeURIComponent(page.name)}/logs`;
  const pre = $("log");
  for (let rounds = 0; rounds < 8; rounds++) {
    const query = page.logEnd == null ? "tail=500" : `offset=${page.logEnd}`;
    const response = await request("GET", `${base}?${query}`, { headers: { Accept: "text/plain" } });
    const text = await response.text();
    if (page !== runPage) return;
    const end = Number(response.headers.get("X-Log-End"));
    const size = Number(response.headers.get("X-Log-Size"));
    if (page.logEnd == null && response.headers.get("X-Log-Truncated") === "true") {
      setText($("log-note"), "showing the last 500 lines");
    }
    if (text) {
      const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      pre.append(document.createTextNode(text));
      if (pre.textContent.length > LOG_KEEP_CHARS * 1.5) {
        const kept = pre.textContent.slice(-LOG_KEEP_CHARS);
        pre.textContent = kept.slice(kept.indexOf("\n") + 1);
        setText($("log-note"), "showing the end of the log");
      }
      if ($("log-follow").checked && (atBottom || page.logEnd == null)) pre.scrollTop = pre.scrollHeight;
    }
    page.logEnd = Number.isFinite(end) ? end : page.logEnd ?? 0;
    if (!(Number.isFinite(size) && page.logEnd < size)) return; // caught up
  }
}

async function refreshCurves(page) {
  const response = await request("GET", `/runs/${encodeURIComponent(page.name)}/metrics`, { etag: page.metricsTag });
  if (page !== runPage || response.status === 304) return;
  page.metricsTag = response.headers.get("ETag");
  const body = await response.json();
  page.curves = {};
  for (const [name, curve] of Object.entries(body.metrics)) page.curves[name] = curve;
  drawCurves(page, body);
  return !!body.partial;
}

function drawCurves(page, body) {
  const wanted = Object.keys(page.curves).filter((n) => /loss/.test(n));
  const names = wanted.length ? wanted : Object.keys(page.curves);
  const curves = Object.fromEntries(names.map((n) => [n, page.curves[n]]));
  const drawn = drawChart($("chart"), curves, { log: $("chart-log").checked });
  $("chart-legend").replaceChildren(
    ...Object.keys(drawn).map((n, i) => el("span", { class: "key" }, el("i", { class: "swatch", "data-color": colorOf(n, i) }), n)),
  );
  for (const swatch of $("chart-legend").querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
  if (body && body.partial) {
    setText($("chart-note"), `sampled ${body.rows} of about ${body.estimated_rows} rows of metrics.csv; reading the whole file…`);
  } else if (body) {
    const thinned = Object.values(body.metrics).some((c) => c.downsampled);
    setText(
      $("chart-note"),
      body.rows
        ? `${body.rows} row${body.rows === 1 ? "" : "s"} of metrics.csv${thinned ? `, thinned to at most ${body.max_points} points per curve` : ""}`
        : page.run && page.run.status === "queued"
          ? "no curves until the run starts"
          : "no metrics.csv yet",
    );
  }
}

async function runAction(method, suffix, after, body = undefined) {
  const page = runPage;
  setText($("run-error"), "");
  const buttons = ["run-cancel", "run-rerun", "run-delete", "run-extend", "run-more-time", "run-resume"].map($);
  buttons.forEach((b) => (b.disabled = true));
  try {
    const headers = method === "POST" && suffix === "/rerun" ? { "Idempotency-Key": idempotencyKey() } : {};
    const run = await sendJSON(method, `/runs/${encodeURIComponent(page.name)}${suffix}`, body, headers);
    after(run);
  } catch (err) {
    setText($("run-error"), err.message);
  } finally {
    $("run-rerun").disabled = false;
    if (runPage && runPage.run) renderRun(runPage.run); // Cancel and Delete as the run's status allows
  }
}

function setupRunView() {
  confirmTwice($("run-cancel"), "Really cancel?", () =>
    runAction("POST", "/cancel", (run) => {
      runPage.run = run;
      runPage.ended = false;
      renderRun(run);
      current?.poller.now();
    }),
  );
  $("run-extend").addEventListener("click", () =>
    runAction("POST", "/extend-stall", (run) => {
      runPage.run = run;
      renderRun(run);
    }),
  );
  $("run-more-time").addEventListener("click", () =>
    runAction(
      "POST",
      "/time-limit",
      (run) => {
        runPage.run = run;
        renderRun(run);
      },
      { extend_by: "1h" },
    ),
  );
  $("run-resume").addEventListener("click", () =>
    runAction("POST", "/resume", (run) => {
      runPage.run = run;
      runPage.ended = false;
      renderRun(run);
      current?.poller.now();
    }),
  );
  $("run-rerun").addEventListener("click", () =>
    runAction("POST", "/rerun", (run) => {
      location.hash = runHref(run.name);
    }),
  );
  confirmTwice($("run-delete"), "Really delete its files?", () =>
    runAction("DELETE", "", (run) => {
      runPage.run = run;
      renderRun(run);
    }),
  );
  $("chart-log").addEventListener("change", () => runPage && drawCurves(runPage, null));
  $("run-files-panel").addEventListener("toggle", () => runPage && $("run-files-panel").open && refreshFiles(runPage));
  $("run-archive").addEventListener("click", (event) => {
    event.preventDefault();
    if (!runPage) return;
    download(`${filesPath(runPage.name)}/archive`, `${runPage.name}.tar`).catch((err) => setText($("run-files-note"), err.message));
  });
  window.addEventListener("resize", () => runPage && current?.name === "run" && drawCurves(runPage, null));
}

// --- routing ------------------------------------------------------------------------------------------------

let current = null; // {name, poller}

function route() {
  const hash = location.hash || "#/";
  let name = "runs";
  let runName = null;
  const match = hash.match(/^#\/runs\/(.+)$/);
  const sweepMatch = hash.match(/^#\/sweeps\/(.+)$/);
  if (match) {
    name = "run";
    runName = decodeURIComponent(match[1]);
  } else if (sweepMatch) {
    name = "sweep";
    runName = decodeURIComponent(sweepMatch[1]);
    openSweep(runName);
  } else if (hash.startsWith("#/queue")) {
    name = "queue";
  } else if (hash === "#/sweeps" || hash === "#/sweeps/") {
    name = "sweeps";
  } else if (hash.startsWith("#/compare")) {
    name = "compare";
    openCompare(hash.slice(hash.indexOf("?") + 1 || hash.length));
  } else if (hash.startsWith("#/settings")) {
    name = "settings";
    openSettings();
  }
  current?.poller.stop();
  for (const view of ["runs", "queue", "run", "sweep", "sweeps", "settings", "compare"]) $(`view-${view}`).hidden = view !== name;
  const nav = name === "sweep" ? "sweeps" : name; // a sweep's page lies under Sweeps
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  if (name === "run") {
    openRun(runName);
    document.title = `${runName} · labrun`;
  } else {
    runPage = null;
    const titles = { queue: "Queue · labrun", sweeps: "Sweeps · labrun", sweep: `${runName} · labrun` };
    document.title = titles[name] || "labrun";
  }
  if (name === "settings") document.title = "Settings · labrun";
  if (name === "compare") document.title = "Compare · labrun";
  const views = { runs: refreshRuns, queue: refreshQueue, run: refreshRun, sweep: refreshSweep };
  const refresh = { ...views, sweeps: refreshSweeps, settings: refreshSettings, compare: refreshCompare }[name];
  current = { name, poller: poll(refresh, REFRESH_MS[name]) };
}

function start() {
  setupRunsView();
  setupRunView();
  setupSweepView();
  setupSweepsView();
  setupSettingsView();
  setupCompare();
  $("signout").addEventListener("click", () => {
    forgetToken();
    location.reload();
  });
  document.addEventListener("labrun:token", () => connection(null));
  document.addEventListener("visibilitychange", () => !document.hidden && current?.poller.now());
  window.addEventListener("hashchange", route);
  route();
}

start();
