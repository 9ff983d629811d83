// The infership page: models and their state, a try-it panel, live charts and code snippets.
// Only this server's public endpoints are used, so what the page does a client can do too.

import { LineChart } from "./charts.js";
import { between, parseMetrics, snapshot } from "./metrics.js";
import { snippet } from "./snippets.js";

const $ = (selector) => document.querySelector(selector);
const SCRAPE_MS = 1000;
const WINDOW_MS = 60_000;

const state = {
  models: new Map(), // name -> {entries: [index entries], metadata: {...} | null}
  model: null,
  version: "",
  lang: "curl",
  lastScrape: null,
  points: [],
  paused: false,
};

// --- talking to the server -----------------------------------------------------------------

const KEY_ITEM = "infership-api-key"; // sessionStorage: the key is forgotten with the tab

// Every request carries the API key typed into the header, if any (servers started with
// --api-keys answer 401 without one).
function withKey(options = {}) {
  const key = sessionStorage.getItem(KEY_ITEM);
  if (!key) return options;
  return { ...options, headers: { ...(options.headers ?? {}), Authorization: `Bearer ${key}` } };
}

async function call(path, options = {}) {
  const started = performance.now();
  const response = await fetch(path, withKey(options));
  const roundTrip = performance.now() - started;
  const text = await response.text();
  let body = text;
  if ((response.headers.get("content-type") ?? "").includes("json") && text) body = JSON.parse(text);
  if (!response.ok) {
    const message = typeof body === "object" && body?.error ? body.error : text || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return { body, roundTrip, serverMs: serverTiming(response), requestId: response.headers.get("x-request-id") };
}

function serverTiming(response) {
  const match = /app;dur=([\d.]+)/.exec(response.headers.get("server-timing") ?? "");
  return match ? Number(match[1]) : null;
}

function modelPath(name, version) {
  const base = `/v2/models/${encodeURIComponent(name)}`;
  return version ? `${base}/versions/${encodeURIComponent(version)}` : base;
}

// --- header: server and health -------------------------------------------------------------

async function refreshHealth() {
  for (const which of ["live", "ready"]) {
    const pill = $(`#${which}`);
    let ok = false;
    try {
      ok = (await fetch(`/v2/health/${which}`, withKey())).ok;
    } catch {
      ok = false;
    }
    pill.dataset.state = ok ? "ok" : "bad";
    pill.textContent = `${which} ${ok ? "✓" : "✗"}`;
  }
}

// --- models ----------------------------------------------------------------------------------

async function refreshModels() {
  const { body: index } = await call("/v2/repository/index", { method: "POST" });
  const models = new Map();
  for (const entry of index) {
    if (!models.has(entry.name)) models.set(entry.name, { entries: [], metadata: null });
    models.get(entry.name).entries.push(entry);
  }
  await Promise.all(
    [...models.entries()].map(async ([name, model]) => {
      if (!model.entries.some((e) => e.state === "READY")) return;
      try {
        model.metadata = (await call(modelPath(name))).body;
      } catch {
        model.metadata = null; // unloaded between the two calls: the row still shows the state
      }
    }),
  );
  state.models = models;
  renderModelRows();
  renderModelPicker();
}

function renderModelRows() {
  const rows = [];
  for (const [name, model] of state.models) {
    for (const entry of model.entries) {
      const tr = document.createElement("tr");
      const cells = [name, entry.version ?? "–", null, model.metadata?.platform ?? "–"];
      cells.forEach((text, i) => {
        const td = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) td.scope = "row";
        if (i === 2) {
          const badge = document.createElement("span");
          badge.className = "pill";
          badge.dataset.state = entry.state === "READY" ? "ok" : entry.state === "LOADING" ? "wait" : "bad";
          badge.textContent = entry.state;
          td.append(badge);
          if (entry.reason) {
            const reason = document.createElement("small");
            reason.className = "reason";
            reason.textContent = entry.reason;
            td.append(reason);
          }
        } else {
          td.textContent = text;
        }
        tr.append(td);
      });
      const action = document.createElement("td");
      if (entry.state === "READY" && model.metadata) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "ghost";
        button.textContent = "Try";
        button.setAttribute("aria-label", `Try ${name}${entry.version ? ` version ${entry.version}` : ""}`);
        button.addEventListener("click", () => {
          selectModel(name, entry.version ?? "");
          $("#try").focus();
        });
        action.append(button);
      }
      tr.append(action);
      rows.push(tr);
    }
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.innerHTML = '<td colspan="5" class="muted">No models in the repository.</td>';
    rows.push(tr);
  }
  $("#model-rows").replaceChildren(...rows);
}

function renderModelPicker() {
  const select = $("#model-select");
  const ready = [...state.models.entries()].filter(([, m]) => m.metadata);
  select.replaceChildren(...ready.map(([name]) => new Option(name, name)));
  if (!ready.length) {
    showPanel(null);
    return;
  }
  const keep = state.model && state.models.get(state.model)?.metadata ? state.model : ready[0][0];
  selectModel(keep, state.version);
}

function selectModel(name, version) {
  state.model = name;
  const model = state.models.get(name);
  $("#model-select").value = name;
  const versions = model.metadata.versions ?? [];
  const select = $("#version-select");
  select.replaceChildren(new Option("newest", ""), ...versions.map((v) => new Option(v, v)));
  state.version = versions.includes(version) ? version : "";
  select.value = state.version;
  showPanel(model.metadata);
  renderSnippet();
}

function isClassifier(metadata) {
  const outputs = new Set(metadata.outputs.map((o) => o.name));
  return metadata.inputs.some((i) => i.datatype === "BYTES") && outputs.has("label") && outputs.has("probability");
}

function showPanel(metadata) {
  $("#try-error").hidden = true;
  const image = metadata !== null && isClassifier(metadata);
  $("#image-panel").hidden = !image;
  $("#tensor-form").hidden = metadata === null || image;
  if (metadata !== null && !image) buildTensorForm(metadata);
}

// --- try it: images ------------------------------------------------------------------------

async function classify(file) {
  $("#try-error").hidden = true;
  const preview = $("#preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `The image you chose: ${file.name}`;
  preview.hidden = false;
  $("#drop-zone").classList.add("has-image");
  $("#predictions").setAttribute("aria-busy", "true");
  const form = new FormData();
  form.append("img", file, file.name);
  try {
    const path = `${modelPath(state.model, state.version)}/predict?top_k=5`;
    const result = await call(path, { method: "POST", body: form });
    renderPredictions(result.body.predictions[0].top_k);
    $("#image-timing").textContent = timing(result, result.body.model_version);
  } catch (error) {
    showError(error);
  } finally {
    $("#predictions").removeAttribute("aria-busy");
  }
}

function renderPredictions(topK) {
  const items = topK.map((p) => {
    const li = document.createElement("li");
    const percent = (p.probability * 100).toFixed(1);
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = p.label;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${percent}%`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.setProperty("width", `${Math.max(p.probability * 100, 0.5)}%`);
    bar.append(fill);
    li.append(name, value, bar);
    return li;
  });
  $("#predictions").replaceChildren(...items);
}

function timing(result, version) {
  const server = result.serverMs === null ? "" : `server ${result.serverMs.toFixed(1)} ms · `;
  return `${server}round trip ${result.roundTrip.toFixed(1)} ms · version ${version} · request ${result.requestId}`;
}

function showError(error) {
  const box = $("#try-error");
  box.textContent = error.message;
  box.hidden = false;
}

// --- try it: tensors -----------------------------------------------------------------------

function buildTensorForm(metadata) {
  const fields = metadata.inputs.map((input, i) => {
    const fieldset = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = `${input.name} · ${input.datatype} [${input.shape.join(", ")}]`;
    const shape = labelled(`Shape`, "input", `shape-${i}`);
    shape.control.value = input.shape.map((d) => (d < 0 ? 1 : d)).join(", ");
    shape.control.dataset.input = input.name;
    shape.control.dataset.datatype = input.datatype;
    const data = labelled(`Values`, "textarea", `data-${i}`);
    data.control.rows = 2;
    data.control.placeholder = input.datatype === "BYTES" ? "one string per line" : "1, 2, 3";
    fieldset.append(legend, shape.label, data.label);
    return fieldset;
  });
  $("#tensor-fields").replaceChildren(...fields);
  $("#tensor-result").hidden = true;
  $("#tensor-timing").textContent = "";
}

function labelled(text, tag, id) {
  const label = document.createElement("label");
  label.textContent = text;
  const control = document.createElement(tag);
  control.id = id;
  control.required = true;
  label.append(control);
  return { label, control };
}

function readTensors() {
  return [...document.querySelectorAll("#tensor-fields fieldset")].map((fieldset, i) => {
    const shapeInput = fieldset.querySelector(`#shape-${i}`);
    const { input: name, datatype } = shapeInput.dataset;
    const shape = shapeInput.value.split(/[\s,]+/).filter(Boolean).map(Number);
    if (shape.some((d) => !Number.isInteger(d) || d < 0)) {
      throw new Error(`${name}: the shape must be whole numbers, e.g. 1, 4`);
    }
    const raw = fieldset.querySelector(`#data-${i}`).value;
    const data =
      datatype === "BYTES"
        ? raw.split("\n").filter((s) => s !== "")
        : raw.split(/[\s,]+/).filter(Boolean).map(valueOf(datatype, name));
    const expected = shape.reduce((a, b) => a * b, 1);
    if (data.length !== expected) {
      throw new Error(`${name}: shape [${shape.join(", ")}] needs ${expected} values; got ${data.length}`);
    }
    return { name, datatype, shape, data };
  });
}

function valueOf(datatype, name) {
  return (text) => {
    if (datatype === "BOOL") return text === "true" || text === "1";
    const value = Number(text);
    if (Number.isNaN(value)) throw new Error(`${name}: ${JSON.stringify(text)} is not a number`);
    return value;
  };
}

async function runTensors(event) {
  event.preventDefault();
  $("#try-error").hidden = true;
  try {
    const inputs = readTensors();
    const result = await call(`${modelPath(state.model, state.version)}/infer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ inputs }),
    });
    const rows = result.body.outputs.map((output) => {
      const tr = document.createElement("tr");
      const values = output.data.length > 32 ? [...output.data.slice(0, 32), "…"] : output.data;
      for (const text of [output.name, output.datatype, `[${output.shape.join(", ")}]`, values.join(", ")]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    });
    $("#tensor-result tbody").replaceChildren(...rows);
    $("#tensor-result").hidden = false;
    $("#tensor-timing").textContent = timing(result, result.body.model_version);
  } catch (error) {
    $("#tensor-result").hidden = true; // an old answer next to a new error would mislead
    $("#tensor-timing").textContent = "";
    showError(error);
  }
}

// --- live charts ---------------------------------------------------------------------------

const charts = [];

function setUpCharts() {
  const ms = (v) => (v === null || v === undefined ? "no requests" : `${v.toFixed(1)} ms`);
  charts.push(
    new LineChart($("#chart-rps"), {
      series: ["rps"],
      windowMs: WINDOW_MS,
      digits: 1,
      describe: (p) => (p ? `Requests per second, now ${p.rps.toFixed(1)}` : "Requests per second: no data yet"),
    }),
    new LineChart($("#chart-latency"), {
      series: ["p50", "p99"],
      windowMs: WINDOW_MS,
      digits: 1,
      describe: (p) => (p ? `Latency: p50 ${ms(p.p50)}, p99 ${ms(p.p99)}` : "Latency: no data yet"),
    }),
    new LineChart($("#chart-batch"), {
      series: ["rowsPerBatch"],
      windowMs: WINDOW_MS,
      digits: 2,
      describe: (p) =>
        p?.rowsPerBatch ? `Rows per batch, now ${p.rowsPerBatch.toFixed(1)}` : "Rows per batch: no batches yet",
    }),
    new LineChart($("#chart-queue"), {
      series: ["queued", "inflight"],
      windowMs: WINDOW_MS,
      digits: 0,
      describe: (p) => (p ? `${p.queued} queued, ${p.inflight} in flight` : "Queue depth: no data yet"),
    }),
  );
}

async function scrape() {
  if (state.paused) return;
  try {
    const response = await fetch("/metrics", withKey());
    if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
    const now = snapshot(parseMetrics(await response.text()), Date.now());
    if (state.lastScrape) state.points.push(between(state.lastScrape, now));
    state.lastScrape = now;
    state.points = state.points.filter((p) => p.at >= now.at - WINDOW_MS);
    $("#scrape-status").textContent = "";
  } catch (error) {
    $("#scrape-status").textContent = `metrics unavailable (${error.message})`;
  }
  for (const chart of charts) chart.draw(state.points);
}

function togglePause() {
  state.paused = !state.paused;
  const button = $("#pause");
  button.setAttribute("aria-pressed", String(state.paused));
  button.textContent = state.paused ? "Resume" : "Pause";
  if (!state.paused) state.lastScrape = null; // a rate across the pause would be misleading
}

// --- snippets ------------------------------------------------------------------------------

function renderSnippet() {
  const metadata = state.model ? state.models.get(state.model)?.metadata : null;
  $("#snippet-code").textContent = metadata
    ? snippet(state.lang, {
        origin: location.origin,
        model: state.model,
        version: state.version,
        metadata,
        classifier: isClassifier(metadata),
      })
    : "# no model is ready yet";
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const choose = (tab, focus) => {
    for (const t of tabs) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
    }
    $("#snippet").setAttribute("aria-labelledby", tab.id);
    state.lang = tab.dataset.lang;
    renderSnippet();
    if (focus) tab.focus();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => choose(tab, false));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) choose(tabs[(i + step + tabs.length) % tabs.length], true);
      if (event.key === "Home") choose(tabs[0], true);
      if (event.key === "End") choose(tabs.at(-1), true);
    });
  });
}

async function copySnippet() {
  const text = $("#snippet-code").textContent;
  const status = $("#copy-status");
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied to the clipboard";
    $("#copy").textContent = "Copied";
  } catch {
    // No clipboard permission: select the text so Ctrl+C works.
    getSelection().selectAllChildren($("#snippet-code"));
    status.textContent = "Selected; press Ctrl+C to copy";
  }
  setTimeout(() => ($("#copy").textContent = "Copy"), 1500);
}

// --- wiring --------------------------------------------------------------------------------

function setUpDropZone() {
  const zone = $("#drop-zone");
  const input = $("#image-input");
  input.addEventListener("change", () => input.files[0] && classify(input.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
    if (file) classify(file);
    else showError(new Error("drop an image file (JPEG, PNG, WebP, GIF, BMP or TIFF)"));
  });
}

async function main() {
  setUpCharts();
  setUpTabs();
  setUpDropZone();
  $("#model-select").addEventListener("change", (e) => selectModel(e.target.value, ""));
  $("#version-select").addEventListener("change", (e) => {
    state.version = e.target.value;
    renderSnippet();
  });
  $("#tensor-form").addEventListener("submit", runTensors);
  $("#refresh-models").addEventListener("click", () => refreshModels().catch(showError));
  $("#pause").addEventListener("click", togglePause);
  $("#copy").addEventListener("click", copySnippet);
  const keyInput = $("#api-key");
  keyInput.value = sessionStorage.getItem(KEY_ITEM) ?? "";
  keyInput.addEventListener("change", () => {
    if (keyInput.value.trim()) sessionStorage.setItem(KEY_ITEM, keyInput.value.trim());
    else sessionStorage.removeItem(KEY_ITEM);
    refreshModels().catch(showError);
  });
  call("/v2")
    .then(({ body }) => ($("#server-version").textContent = `v${body.version}`))
    .catch(() => {});
  await Promise.all([refreshHealth(), refreshModels().catch(showError), scrape()]);
  setInterval(scrape, SCRAPE_MS);
  setInterval(refreshHealth, 5000);
  document.body.dataset.ready = "true";
}

main();
