// braintumor serve: the page's behaviour. Each chosen or dropped file gets a card; the file is
// sent to /v1/predict (class, bars, "not a brain MRI" banner, warnings), then to /v1/explain
// (the image as the network sees it, with the Grad-CAM heatmap over it). A NIfTI volume gets its
// summary and the slices that drove it, the first of them explained. Files are handled one after
// another, so a batch never floods the server.
"use strict";

const CLASS_NAMES = {
  glioma: "Glioma",
  meningioma: "Meningioma",
  no_tumor: "No tumour",
  pituitary: "Pituitary tumour",
  not_brain_mri: "Not a brain MRI",
};

const state = { explain: true, queue: Promise.resolve() };

function el(id) {
  return document.getElementById(id);
}

function className(name) {
  return CLASS_NAMES[name] || name;
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

// POST one file to an endpoint; resolve to {ok, status, body} whatever the answer.
async function send(path, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  try {
    response = await fetch(path, { method: "POST", body: form, headers: { Accept: "application/json" } });
  } catch (err) {
    return { ok: false, status: 0, body: { error: { message: "the server cannot be reached", hint: "check that braintumor serve is running" } } };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = { error: { message: "the server's answer is not JSON (status " + response.status + ")", hint: null } };
  }
  return { ok: response.ok, status: response.status, body: body };
}

function errorText(result) {
  const error = (result.body && result.body.error) || {};
  let text = error.message || "request failed with status " + result.status;
  if (error.hint) {
    text += " (" + error.hint + ")";
  }
  return text;
}

function makeCard(file) {
  const card = el("card-template").content.firstElementChild.cloneNode(true);
  card.querySelector(".file-name").textContent = file.name || "unnamed file";
  card.querySelector(".status").textContent = "Waiting…";
  el("results").appendChild(card);
  el("empty").hidden = true;
  return card;
}

function showError(card, file, result) {
  card.classList.add("failed");
  card.querySelector(".status").textContent = "";
  const line = document.createElement("p");
  line.className = "error-line";
  line.setAttribute("role", "alert");
  line.textContent = "Could not classify " + (file.name || "this file") + ": " + errorText(result);
  card.querySelector(".frames").replaceChildren(line);
}

function renderBars(list, probabilities, topClass) {
  list.replaceChildren();
  for (const [name, p] of Object.entries(probabilities)) {
    const item = document.createElement("li");
    item.className = "bar" + (name === topClass ? " top" : "");
    item.dataset.class = name;
    const label = document.createElement("span");
    label.className = "bar-name";
    label.textContent = className(name);
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", className(name));
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", (100 * p).toFixed(1));
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = (100 * p).toFixed(1) + "%";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "bar-pct";
    value.textContent = percent(p);
    item.append(label, track, value);
    list.appendChild(item);
  }
}

const VOLUME_SLICES_SHOWN = 3;

function renderFrame(record, count, volume) {
  const frame = el("frame-template").content.firstElementChild.cloneNode(true);
  if (volume) {
    frame.querySelector(".frame-title").textContent = "Slice " + record.frame + " (of " + volume.predicted + " predicted)";
  } else if (record.frame !== null && record.frame !== undefined) {
    frame.querySelector(".frame-title").textContent = "Frame " + record.frame + " of " + count;
  }
  const rejected = record.accepted === false;
  frame.classList.toggle("rejected", rejected);
  frame.querySelector(".banner").hidden = !rejected;
  const verdict = frame.querySelector(".verdict");
  verdict.classList.toggle("rejected", rejected);
  frame.querySelector(".verdict-label").textContent = className(record.label);
  const top = record.probabilities[record.top_class];
  frame.querySelector(".verdict-pct").textContent = rejected
    ? "(model's guess: " + className(record.top_class) + ", " + percent(top) + ")"
    : percent(top);
  renderBars(frame.querySelector(".bars"), record.probabilities, record.top_class);
  const warnings = frame.querySelector(".warnings");
  for (const text of record.warnings || []) {
    if (rejected && text.startsWith("This image does not look like")) {
      continue; // the banner says it
    }
    const item = document.createElement("li");
    item.textContent = text;
    warnings.appendChild(item);
  }
  if (!state.explain) {
    frame.querySelector(".placeholder").textContent = "No heatmap: this model cannot be explained.";
  }
  return frame;
}

function showHeatmap(frame, record, fileName) {
  const scan = frame.querySelector(".scan");
  const heat = frame.querySelector(".heat");
  const slider = frame.querySelector(".opacity");
  const output = frame.querySelector(".opacity-value");
  scan.src = "data:image/png;base64," + record.image_png;
  scan.alt = fileName + " as the model sees it";
  heat.src = "data:image/png;base64," + record.heatmap_png;
  heat.alt = "Grad-CAM heatmap of the evidence for " + className(record.explained_class);
  scan.hidden = false;
  heat.hidden = false;
  frame.querySelector(".placeholder").hidden = true;
  frame.querySelector(".slider").hidden = false;
  const apply = () => {
    heat.style.opacity = String(slider.value / 100);
    output.textContent = slider.value + "%";
  };
  slider.addEventListener("input", apply);
  slider.setAttribute("aria-label", "Heatmap opacity for " + fileName);
  apply();
  frame.querySelector(".caption").textContent =
    "Red: where the evidence for " + className(record.explained_class) + " lies (Grad-CAM). " +
    "The image is cropped and resized as the network sees it.";
}

async function handle(file) {
  const card = makeCard(file);
  const status = card.querySelector(".status");
  status.textContent = "Classifying…";
  const predicted = await send("/v1/predict", file);
  if (!predicted.ok) {
    showError(card, file, predicted);
    return;
  }
  const volume = predicted.body.volume;
  let records = predicted.body.predictions;
  let explainPath = "/v1/explain";
  const shown = [];
  if (volume) {
    // a volume: its summary, then the slices that drove it (the first explained)
    const summary = document.createElement("p");
    summary.className = "volume-summary";
    summary.textContent = "Volume: " + volume.text + (volume.text.includes(volume.notice) ? "" : " (" + volume.notice + ")");
    shown.push(summary);
    const byFrame = new Map(records.map((r) => [r.frame, r]));
    records = volume.evidence_slices.slice(0, VOLUME_SLICES_SHOWN).map((n) => byFrame.get(n)).filter(Boolean);
    explainPath = records.length ? "/v1/explain?frame=" + records[0].frame : null;
  }
  const frames = records.map((record) => renderFrame(record, records.length, volume));
  frames.slice(1).forEach((frame) => {
    if (volume) {
      frame.querySelector(".placeholder").textContent = "Heatmap: shown for the first slice only.";
    }
  });
  card.querySelector(".frames").replaceChildren(...shown, ...frames);
  card.classList.add("done");
  if (!state.explain || !explainPath) {
    status.textContent = "";
    return;
  }
  status.textContent = "Computing the heatmap…";
  const explained = await send(explainPath, file);
  if (!explained.ok) {
    status.textContent = "No heatmap: " + errorText(explained);
    for (const frame of frames) {
      frame.querySelector(".placeholder").textContent = "No heatmap.";
    }
    return;
  }
  explained.body.predictions.forEach((record, i) => {
    if (frames[i]) {
      showHeatmap(frames[i], record, file.name || "the image");
    }
  });
  status.textContent = "";
  card.classList.add("explained");
}

function enqueue(files) {
  for (const file of files) {
    state.queue = state.queue.then(() => handle(file)).catch((err) => {
      // a bug of this page, not of the server: say so on the page rather than fail silently
      const line = document.createElement("p");
      line.className = "error-line";
      line.textContent = "The page failed on " + file.name + ": " + err;
      el("results").appendChild(line);
    });
  }
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model", { headers: { Accept: "application/json" } });
    const model = await response.json();
    state.explain = Boolean(model.explain_available);
    el("model").textContent = "Model: " + model.name + " (version " + model.version + "), input " +
      model.input_size + " px, classes: " + model.classes.map(className).join(", ") + ".";
  } catch (err) {
    el("model").textContent = "Model: unknown (the server did not answer).";
  }
}

function setUp() {
  const drop = el("drop");
  const input = el("files");
  el("choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    enqueue(Array.from(input.files));
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    enqueue(Array.from(event.dataTransfer.files));
  });
  // a file dropped beside the drop area must not replace the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  loadModel();
}

document.addEventListener("DOMContentLoaded", setUp);
