// Cube's dashboard. It loads the nodes and tasks once, then changes its tables from the event
// stream alone (GET /events, read with fetch() so that the token travels in a header); its
// only other requests are the user's own actions. The token is kept for the browser session.
"use strict";

const $ = (selector) => document.querySelector(selector);
const tasks = new Map(); // task ID -> row data
const nodes = new Map(); // node name -> report
let stream = null; // the AbortController of the event stream

function token() {
  return sessionStorage.getItem("cube-token");
}

function setStatus(text, kind) {
  const status = $("#status");
  status.textContent = text;
  status.className = "status " + (kind || "");
}

function say(text, isError) {
  const message = $("#message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

// A request to the manager with the token, JSON in and out; throws with the API's message.
async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + token() } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const why = data && data.Message ? data.Message : response.statusText;
    throw new Error(response.status + ": " + why);
  }
  return data;
}

// --- tables -----------------------------------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

const mib = (bytes) => Math.round(bytes / 1048576) + " MiB";
const cpus = (n) => (Math.round(n * 1000) / 1000).toString();

function drawNodes() {
  const body = $("#nodes tbody");
  body.replaceChildren();
  for (const node of [...nodes.values()].sort((a, b) => a.Name.localeCompare(b.Name))) {
    const row = document.createElement("tr");
    row.dataset.node = node.Name;
    cell(row, node.Name);
    cell(row, node.Eligible === false ? node.Status + " (drained)" : node.Status, "node-" + node.Status);
    cell(row, cpus(node.Reserved.Cpu) + " / " + cpus(node.Capacity.Cpu));
    cell(row, mib(node.Reserved.Memory) + " / " + mib(node.Capacity.Memory));
    cell(row, node.Stats ? node.Stats.Load.One.toFixed(2) : "-");
    cell(row, String(node.TaskCount));
    body.appendChild(row);
  }
}

function ports(hostPorts) {
  const out = [];
  for (const [port, bindings] of Object.entries(hostPorts || {})) {
    for (const b of bindings || []) out.push(b.HostPort + "→" + port);
  }
  return out.join(", ");
}

function drawTasks() {
  const body = $("#tasks tbody");
  body.replaceChildren();
  for (const task of tasks.values()) {
    const row = document.createElement("tr");
    row.dataset.task = task.ID;
    row.dataset.state = task.State;
    cell(row, task.Name);
    cell(row, task.ID.slice(0, 8));
    cell(row, task.State, "state state-" + task.State);
    cell(row, task.Node || "");
    cell(row, ports(task.HostPorts));
    cell(row, String(task.RestartCount || 0));
    cell(row, task.Reason || "", "reason");
    const actions = cell(row, "");
    if (["Pending", "Scheduled", "Running"].includes(task.State)) {
      const stop = document.createElement("button");
      stop.textContent = "Stop";
      stop.className = "stop";
      stop.addEventListener("click", () => stopTask(task.ID));
      actions.appendChild(stop);
    }
    body.appendChild(row);
  }
}

// --- events -----------------------------------------------------------------------------------

// Applies one event of the stream to the tables.
function apply(kind, data) {
  if (kind === "task") {
    if (data.To === null) {
      tasks.delete(data.Task);
    } else {
      const known = tasks.get(data.Task) || { ID: data.Task };
      tasks.set(data.Task, {
        ...known,
        Name: data.Name,
        State: data.To,
        Node: data.Node,
        HostPorts: data.HostPorts,
        RestartCount: data.Attempt,
        Reason: data.Reason,
      });
    }
    drawTasks();
  } else if (kind === "node") {
    if (data.To === null) nodes.delete(data.Node);
    else if (nodes.has(data.Node)) nodes.get(data.Node).Status = data.To;
    drawNodes();
  } else if (kind === "nodes") {
    nodes.clear();
    for (const node of data) nodes.set(node.Name, node);
    drawNodes();
  } else if (kind === "reset") {
    // Events were missed: the tables may be wrong. Start again from a fresh load.
    say("The event stream lost events (" + data.Reason + "); reloading.", true);
    connect();
  }
}

// Splits the stream's text into Server-Sent Events and hands each to `handle`.
function sseParser(handle) {
  let buffer = "";
  return (chunk) => {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      let data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) handle(kind, JSON.parse(data));
    }
  };
}

// Opens the stream, then loads the tables; events that arrive while they load are applied
// after them, in order, so nothing that happens in between is lost.
async function connect() {
  if (stream) stream.abort();
  stream = new AbortController();
  const controller = stream;
  setStatus("connecting");
  let loaded = false;
  const early = [];
  const parse = sseParser((kind, data) => {
    if (kind === "open") {
      load().then(() => {
        loaded = true;
        for (const [k, d] of early) apply(k, d);
        setStatus("live", "live");
      }, (e) => fail(e));
    } else if (!loaded) {
      early.push([kind, data]);
    } else {
      apply(kind, data);
    }
  });
  try {
    const response = await fetch("/events?nodes=true", {
      headers: { Authorization: "Bearer " + token() },
      signal: controller.signal,
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error(response.status + ": " + (data ? data.Message : response.statusText));
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parse(value);
    }
    if (stream === controller) setStatus("disconnected: the manager closed the stream", "error");
  } catch (e) {
    if (stream === controller && e.name !== "AbortError") fail(e);
  }
}

function fail(e) {
  setStatus("error: " + e.message, "error");
  if (e.message.startsWith("401")) logout();
}

async function load() {
  const [nodeList, taskList] = await Promise.all([api("GET", "/nodes"), api("GET", "/tasks")]);
  nodes.clear();
  for (const node of nodeList) nodes.set(node.Name, node);
  tasks.clear();
  for (const task of taskList) tasks.set(task.ID, task);
  drawNodes();
  drawTasks();
}

// --- actions ----------------------------------------------------------------------------------

async function runTask(form) {
  const field = (name) => form.elements[name].value.trim();
  const task = {
    Name: field("name"),
    Image: field("image"),
    Cpu: Number(field("cpu") || 0),
    Memory: Math.round(Number(field("memory") || 0) * 1048576),
  };
  if (field("port")) {
    const port = field("port").includes("/") ? field("port") : field("port") + "/tcp";
    task.ExposedPorts = { [port]: {} };
  }
  if (field("restart")) task.RestartPolicy = field("restart");
  try {
    const stored = await api("POST", "/tasks", { State: "Running", Task: task });
    if (!tasks.has(stored.ID)) tasks.set(stored.ID, stored);
    drawTasks();
    say("Task " + stored.Name + " submitted (" + stored.ID.slice(0, 8) + ").");
    form.elements["name"].value = "";
  } catch (e) {
    say("Not run: " + e.message, true);
  }
}

async function stopTask(id) {
  try {
    await api("DELETE", "/tasks/" + id);
    say("Task " + id.slice(0, 8) + " stopped.");
  } catch (e) {
    say("Not stopped: " + e.message, true);
  }
}

function logout() {
  sessionStorage.removeItem("cube-token");
  if (stream) stream.abort();
  stream = null;
  tasks.clear();
  nodes.clear();
  drawNodes();
  drawTasks();
  $("#login").hidden = false;
  $("#logout").hidden = true;
  if (!$("#status").classList.contains("error")) setStatus("not connected");
}

function start() {
  $("#login").hidden = true;
  $("#logout").hidden = false;
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("cube-token", $("#token").value.trim());
    $("#token").value = "";
    start();
  });
  $("#logout").addEventListener("click", logout);
  $("#run").addEventListener("submit", (e) => {
    e.preventDefault();
    runTask(e.target);
  });
  if (token()) start();
});
