// The web page: start a job on a stored dataset or an uploaded zip, follow it live, open its
// report, list datasets and recent jobs.
// Every API call carries the key from the key field. The progress stream is read with fetch():
// EventSource cannot send an Authorization header.
"use strict";

const KEY_STORAGE = "balancer.apiKey";
const INT_OPTIONS = ["target", "gan_iterations", "epochs", "seeds", "seed", "image_size"];
const FLOAT_OPTIONS = ["test_fraction", "synthetic_share"];
const FINISHED = new Set(["succeeded", "failed", "canceled"]);
const STAGES = {
  validating: "Checking the dataset",
  training_gan: "Training the GANs",
  training_classifier: "Training the classifiers",
  evaluating: "Evaluating",
  packaging: "Packaging the results",
};
const RECONNECTS = 5;

const $ = (id) => document.getElementById(id);
const state = { jobId: null, watch: null, urls: [] };

// --- API ---------------------------------------------------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function api(path, options = {}) {
  return fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
}

// "Title: detail" from a problem+json answer, or the HTTP status for anything else.
async function problemText(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    return `The server answered ${resp.status} ${resp.statusText}`;
  }
  const title = body.title || `Error ${resp.status}`;
  const text = body.detail ? `${title}: ${body.detail}` : title;
  return resp.status === 401 || resp.status === 403 ? `${text} (check the API key)` : text;
}

// --- Small helpers -----------------------------------------------------------------------

function show(id, visible) {
  $(id).hidden = !visible;
}

function showError(id, text) {
  $(id).textContent = text || "";
  show(id, Boolean(text));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function formatEta(seconds, status) {
  if (status !== "running") return "–";
  if (seconds === null || seconds === undefined) return "estimating…";
  if (seconds < 60) return `about ${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `about ${minutes} min ${seconds % 60} s`;
  return `about ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function percent(progress) {
  return `${Math.round((progress || 0) * 100)} %`;
}

function stageLabel(stage) {
  return stage ? STAGES[stage] || stage : "–";
}

// --- API key -----------------------------------------------------------------------------

function setupKey() {
  const input = $("api-key");
  input.value = localStorage.getItem(KEY_STORAGE) || "";
  input.addEventListener("input", () => localStorage.setItem(KEY_STORAGE, input.value.trim()));
  input.addEventListener("change", refreshJobs);
  input.addEventListener("change", () => refreshDatasets());
  $("toggle-key").addEventListener("click", (event) => {
    const hidden = input.type === "password";
    input.type = hidden ? "text" : "password";
    event.target.textContent = hidden ? "Hide" : "Show";
    event.target.setAttribute("aria-pressed", String(hidden));
  });
}

// --- Upload ------------------------------------------------------------------------------

// The options the user filled in, as the job's JSON config; blank fields are left out.
function collectConfig() {
  const config = {};
  const preset = $("opt-preset").value;
  if (preset) config.preset = preset;
  const augment = $("opt-classifier_augment").value;
  if (augment) config.classifier_augment = augment;
  const generator = $("opt-generator").value;
  if (generator) config.generator = generator;
  const evaluation = $("opt-evaluation").value;
  if (evaluation) config.evaluation = evaluation;
  for (const name of [...INT_OPTIONS, ...FLOAT_OPTIONS]) {
    const raw = $(`opt-${name}`).value.trim();
    if (raw === "") continue;
    const value = FLOAT_OPTIONS.includes(name) ? Number(raw) : Number.parseInt(raw, 10);
    if (!Number.isFinite(value)) throw new Error(`${name} must be a number, got "${raw}"`);
    config[name] = value;
  }
  return config;
}

// XMLHttpRequest, not fetch: it reports upload progress, and datasets can be large.
function postJob(form) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) $("upload-status").textContent = `Uploading… ${percent(e.loaded / e.total)}`;
    };
    xhr.onload = () => resolve(new Response(xhr.response, { status: xhr.status, statusText: xhr.statusText }));
    xhr.onerror = () => reject(new Error("the upload failed: the server could not be reached"));
    xhr.send(form);
  });
}

async function submitJob(event) {
  event.preventDefault();
  showError("form-error", "");
  const datasetId = $("dataset-choice").value;
  const file = $("dataset").files[0];
  if (!datasetId && !file) return showError("form-error", "Choose a dataset zip first.");
  let config;
  try {
    config = collectConfig();
  } catch (err) {
    return showError("form-error", err.message);
  }
  $("submit-job").disabled = true;
  $("upload-status").textContent = datasetId ? "Starting…" : "Uploading…";
  try {
    let resp;
    if (datasetId) {
      const headers = { "Content-Type": "application/json" };
      const body = JSON.stringify({ dataset_id: datasetId, config });
      resp = await api("/v1/jobs", { method: "POST", headers, body });
    } else {
      const form = new FormData();
      form.append("config", JSON.stringify(config));
      form.append("dataset", file, file.name);
      resp = await postJob(form);
    }
    if (resp.status !== 202) {
      const what = datasetId ? "Job refused." : "Upload refused.";
      return showError("form-error", `${what} ${await problemText(resp)}`);
    }
    const job = await resp.json();
    refreshJobs();
    if (!datasetId) refreshDatasets();
    watch(job.id);
  } catch (err) {
    showError("form-error", `Upload failed: ${err.message}`);
  } finally {
    $("submit-job").disabled = false;
    $("upload-status").textContent = "";
  }
}

// --- Following a job ---------------------------------------------------------------------

// Parse one Server-Sent Events block into {event, data}; null for comments (keep-alives).
function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}

async function* readEvents(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const parsed = parseEvent(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (parsed) yield parsed;
    }
  }
}

function stopWatching() {
  if (state.watch) state.watch.abort();
  state.watch = null;
}

function resetPanel(jobId) {
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  state.jobId = jobId;
  $("job-id").textContent = jobId;
  $("report-frame").removeAttribute("src");
  showError("job-error", "");
  show("job-results", false);
  show("job-panel", true);
  renderProgress({ status: "queued", stage: null, progress: 0, eta_seconds: null });
}

function renderProgress(p) {
  const status = $("job-status");
  status.textContent = p.status;
  status.className = `status status-${p.status}`;
  $("job-stage").textContent = FINISHED.has(p.status) ? "–" : stageLabel(p.stage);
  $("job-progress").value = p.progress || 0;
  $("job-progress-text").textContent = percent(p.progress);
  $("job-eta").textContent = formatEta(p.eta_seconds, p.status);
}

function showProgress(jobId, p) {
  if (state.jobId !== jobId) return;
  renderProgress(p);
  const row = document.querySelector(`#jobs-body tr[data-job-id="${jobId}"]`);
  if (row) fillStatusCells(row, p);
}

async function watch(jobId) {
  stopWatching();
  const control = new AbortController();
  state.watch = control;
  resetPanel(jobId);
  history.replaceState(null, "", `#job=${jobId}`);
  for (let failures = 0; failures <= RECONNECTS; failures += 1) {
    try {
      const resp = await api(`/v1/jobs/${jobId}/events`, { signal: control.signal });
      if (!resp.ok) return showError("job-error", await problemText(resp));
      for await (const { event, data } of readEvents(resp)) {
        failures = 0;
        if (event === "progress") showProgress(jobId, JSON.parse(data));
        if (event === "end") return await jobEnded(jobId, JSON.parse(data));
      }
    } catch (err) {
      if (control.signal.aborted) return;
    }
    if (control.signal.aborted) return;
    await sleep(2000); // the stream broke before the job ended: follow it again
  }
  showError("job-error", "Lost the connection to the server; reload the page to follow the job.");
}

async function jobEnded(jobId, end) {
  refreshJobs();
  if (end.status === "deleted") return showError("job-error", "The job was deleted.");
  const resp = await api(`/v1/jobs/${jobId}`);
  if (state.jobId !== jobId) return; // the user went on to another job meanwhile
  if (!resp.ok) return showError("job-error", await problemText(resp));
  const job = await resp.json();
  renderProgress(job);
  if (job.status === "succeeded") return showResults(job);
  if (job.status === "canceled") return showError("job-error", "The job was canceled.");
  showError("job-error", `The job failed: ${job.error || "no reason given"}`);
}

// --- Results -----------------------------------------------------------------------------

async function fetchBlob(path) {
  const resp = await api(path);
  if (!resp.ok) throw new Error(await problemText(resp));
  const url = URL.createObjectURL(await resp.blob());
  state.urls.push(url);
  return url;
}

async function showResults(job) {
  show("job-results", true);
  try {
    const url = await fetchBlob(job.links.report_html);
    if (state.jobId !== job.id) return;
    $("report-link").href = url;
    $("report-frame").src = url;
  } catch (err) {
    showError("job-error", `Cannot load the report. ${err.message}`);
  }
}

async function downloadDataset(event) {
  event.preventDefault();
  const jobId = state.jobId;
  $("download-status").textContent = "Downloading…";
  try {
    const url = await fetchBlob(`/v1/jobs/${jobId}/balanced-dataset`);
    const link = document.createElement("a");
    link.href = url;
    link.download = `balanced-${jobId}.zip`;
    document.body.append(link);
    link.click();
    link.remove();
    $("download-status").textContent = "";
  } catch (err) {
    $("download-status").textContent = "";
    showError("job-error", `Download failed. ${err.message}`);
  }
}

// --- Recent jobs -------------------------------------------------------------------------

function progressText(job) {
  if (job.status === "queued") return "waiting";
  return FINISHED.has(job.status) ? "" : `${percent(job.progress)} · ${stageLabel(job.stage)}`;
}

function fillStatusCells(row, job) {
  row.cells[2].textContent = job.status;
  row.cells[2].className = `status status-${job.status}`;
  row.cells[3].textContent = progressText(job);
}

function jobRow(job) {
  const row = document.createElement("tr");
  row.dataset.jobId = job.id;
  for (const text of [new Date(job.created_at).toLocaleString(), job.id.slice(0, 8), "", ""]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  row.cells[1].title = job.id;
  fillStatusCells(row, job);
  const open = document.createElement("button");
  open.type = "button";
  open.textContent = "Show";
  open.setAttribute("aria-label", `Show job ${job.id}`);
  open.addEventListener("click", () => watch(job.id));
  const actions = document.createElement("td");
  actions.append(open);
  row.append(actions);
  return row;
}

async function refreshJobs() {
  const message = $("jobs-message");
  if (!$("api-key").value.trim()) {
    message.textContent = "Enter your API key to see your jobs.";
    $("jobs-body").replaceChildren();
    return;
  }
  message.textContent = "Loading…";
  try {
    const resp = await api("/v1/jobs?limit=20");
    if (!resp.ok) {
      message.textContent = await problemText(resp);
      return;
    }
    const page = await resp.json();
    $("jobs-body").replaceChildren(...page.items.map(jobRow));
    message.textContent = page.total ? `${page.items.length} of ${page.total} jobs` : "No jobs yet.";
  } catch (err) {
    message.textContent = `Cannot list the jobs: ${err.message}`;
  }
}

// --- Datasets ----------------------------------------------------------------------------

function classSummary(dataset) {
  return dataset.classes
    .map((name) => `${name}: ${dataset.counts[name].train} / ${dataset.counts[name].test}`)
    .join(", ");
}

function useDataset(datasetId) {
  $("dataset-choice").value = datasetId;
  datasetChoiceChanged();
  $("dataset-choice").focus();
}

async function deleteDataset(dataset) {
  const resp = await api(`/v1/datasets/${dataset.id}`, { method: "DELETE" });
  $("datasets-message").textContent = resp.ok
    ? `Deleted ${dataset.name}.`
    : `Cannot delete ${dataset.name}: ${await problemText(resp)}`;
  if (resp.ok) refreshDatasets(false);
}

function datasetRow(dataset) {
  const row = document.createElement("tr");
  row.dataset.datasetId = dataset.id;
  const layout = `${dataset.layout}, ${dataset.mode}${dataset.builtin ? ", built-in" : ""}`;
  for (const text of [dataset.name, classSummary(dataset), String(dataset.images), layout]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  row.cells[0].title = dataset.id;
  const actions = document.createElement("td");
  const use = document.createElement("button");
  use.type = "button";
  use.textContent = "New job";
  use.setAttribute("aria-label", `New job on ${dataset.name}`);
  use.addEventListener("click", () => useDataset(dataset.id));
  actions.append(use);
  if (!dataset.builtin) {
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete dataset ${dataset.name}`);
    remove.addEventListener("click", () => deleteDataset(dataset));
    actions.append(remove);
  }
  row.append(actions);
  return row;
}

function fillDatasetChoice(datasets) {
  const choice = $("dataset-choice");
  const chosen = choice.value;
  const upload = choice.options[0];
  const options = datasets.map((d) => new Option(`${d.name} (${d.classes.length} classes)`, d.id));
  choice.replaceChildren(upload, ...options);
  choice.value = datasets.some((d) => d.id === chosen) ? chosen : "";
  datasetChoiceChanged();
}

function datasetChoiceChanged() {
  const stored = Boolean($("dataset-choice").value);
  show("upload-row", !stored);
  show("dataset-hint", !stored);
  $("submit-job").textContent = stored ? "Start the job" : "Upload and start";
}

async function refreshDatasets(clearMessage = true) {
  const message = $("datasets-message");
  if (!$("api-key").value.trim()) {
    message.textContent = "Enter your API key to see your datasets.";
    $("datasets-body").replaceChildren();
    return;
  }
  if (clearMessage) message.textContent = "Loading…";
  try {
    const resp = await api("/v1/datasets?limit=100");
    if (!resp.ok) {
      message.textContent = await problemText(resp);
      return;
    }
    const page = await resp.json();
    $("datasets-body").replaceChildren(...page.items.map(datasetRow));
    fillDatasetChoice(page.items);
    if (clearMessage) message.textContent = `${page.total} datasets (built-in ones first)`;
  } catch (err) {
    message.textContent = `Cannot list the datasets: ${err.message}`;
  }
}

// --- Start -------------------------------------------------------------------------------

function start() {
  setupKey();
  $("job-form").addEventListener("submit", submitJob);
  $("refresh-jobs").addEventListener("click", refreshJobs);
  $("refresh-datasets").addEventListener("click", () => refreshDatasets());
  $("dataset-choice").addEventListener("change", datasetChoiceChanged);
  $("download-link").addEventListener("click", downloadDataset);
  refreshJobs();
  refreshDatasets();
  const fromHash = /^#job=([0-9a-f-]{36})$/.exec(location.hash);
  if (fromHash && $("api-key").value.trim()) watch(fromHash[1]);
}

document.addEventListener("DOMContentLoaded", start);
