// The settings page (#/settings): your notification destinations (list, add, test, remove) and the events
// your runs send by default, through /me/notify (docs: notifications). A webhook's signing secret is shown
// once, right after it is added, as the server returns it then only. Everything the server says is put on
// the page as text, never as HTML.

import { getJSON, sendJSON } from "./api.js";

const $ = (id) => document.getElementById(id);
const EVENTS = ["succeeded", "failed", "cancelled", "sweep_finished", "preempted", "resumed"];

let shown = ""; // the destinations as last drawn (JSON), so an unchanged list is not redrawn

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text == null ? "" : String(text);
  return td;
}

function say(text, bad = false) {
  const node = $("notify-result");
  node.textContent = text;
  node.className = bad ? "field-error" : "muted";
}

function button(label, action, cls = "") {
  const node = document.createElement("button");
  node.type = "button";
  node.textContent = label;
  if (cls) node.className = cls;
  node.addEventListener("click", () => action(node));
  return node;
}

async function testDestination(id) {
  say(`Sending a test message to destination ${id}…`);
  try {
    const result = await sendJSON("POST", `/me/notify/destinations/${id}/test`, {});
    say(result.ok ? `Destination ${id} got the test message.` : `Destination ${id} did not get it: ${result.error}`, !result.ok);
  } catch (err) {
    say(err.message, true);
  }
  await refreshSettings(true);
}

/** Remove needs a second click within 4 s: it cannot be undone. */
async function removeDestination(id, node) {
  if (!node.dataset.armed) {
    node.dataset.armed = "1";
    node.textContent = "Really remove?";
    setTimeout(() => {
      delete node.dataset.armed;
      node.textContent = "Remove";
    }, 4000);
    return;
  }
  try {
    await sendJSON("DELETE", `/me/notify/destinations/${id}`);
    say(`Removed destination ${id}.`);
    $("dest-secret").hidden = true;
  } catch (err) {
    say(err.message, true);
  }
  await refreshSettings(true);
}

function row(d) {
  const tr = document.createElement("tr");
  tr.dataset.id = d.id;
  const error = d.last_error ? `${d.last_error} (${d.failures} in a row)` : "";
  const actions = cell("", "actions");
  actions.append(
    button("Test", () => testDestination(d.id)),
    button("Remove", (node) => removeDestination(d.id, node), "danger"),
  );
  tr.append(cell(d.id, "num"), cell(d.kind), cell(d.events ? `${d.label} · only: ${d.events.join(", ") || "none"}` : d.label, "name"), cell(d.state, `state-${d.state}`), cell(error), actions);
  return tr;
}

export async function refreshSettings(force = false) {
  const list = await getJSON("/me/notify/destinations");
  const text = JSON.stringify(list.data);
  if (text === shown && !force) return;
  shown = text;
  $("dest-rows").replaceChildren(...list.data.map(row));
  $("dest-empty").hidden = list.count > 0;
}

export async function openSettings() {
  shown = "";
  say("");
  $("dest-secret").hidden = true;
  try {
    const chosen = new Set((await getJSON("/me/notify/events")).events);
    for (const name of EVENTS) $(`event-${name}`).checked = chosen.has(name);
  } catch (err) {
    say(err.message, true);
  }
}

async function addDestination(event) {
  event.preventDefault();
  const input = $("dest-url");
  const url = input.value.trim();
  if (!url) return;
  $("dest-error").textContent = "";
  $("dest-secret").hidden = true;
  try {
    const added = await sendJSON("POST", "/me/notify/destinations", { url });
    input.value = ""; // the URL may hold a secret: not left on the page
    say(`Added destination ${added.id}: ${added.label}.`);
    if (added.signing_secret) {
      $("dest-secret-value").textContent = added.signing_secret;
      $("dest-secret").hidden = false;
    }
  } catch (err) {
    $("dest-error").textContent = err.message;
  }
  await refreshSettings(true);
}

async function saveEvents(event) {
  event.preventDefault();
  const events = EVENTS.filter((name) => $(`event-${name}`).checked);
  try {
    const saved = await sendJSON("PUT", "/me/notify/events", { events });
    say(`Your runs now send: ${saved.events.join(", ") || "nothing"}.`);
  } catch (err) {
    say(err.message, true);
  }
}

export function setupSettingsView() {
  $("dest-form").addEventListener("submit", addDestination);
  $("events-form").addEventListener("submit", saveEvents);
}
