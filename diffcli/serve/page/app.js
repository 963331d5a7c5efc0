// The page of `diffcli serve --http` (docs/serve.md, "The page"). Plain script, no build step, nothing
// fetched from anywhere but this server: the form posts to /v1/jobs, progress comes from the job's
// Server-Sent Events (/v1/events?job=ID), the gallery from /v1/gallery. Server text is only ever put in
// the page as text (textContent), never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { samplers: [], source: null, job: null, initImage: null, made: [] };

async function getJSON(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && (body.detail || (body.error && body.error.message) || body.error);
    throw new Error(detail ? String(detail) : `${response.status} ${response.statusText}`);
  }
  return body;
}

function option(value, text) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text;
  return item;
}

async function loadChoices() {
  try {
    const models = await getJSON("/sdapi/v1/sd-models");
    for (const model of models) $("model").append(option(model.model_name, model.model_name));
    if (models.some((m) => m.model_name === "tiny")) $("model").value = "tiny";
  } catch (error) {
    say(`Could not list the models: ${error.message}`);
  }
  try {
    state.samplers = await getJSON("/sdapi/v1/samplers");
    for (const sampler of state.samplers) {
      $("sampler").append(option(sampler.name, `${sampler.name} (${sampler.aliases.join(", ")})`));
    }
  } catch (error) {
    say(`Could not list the samplers: ${error.message}`);
  }
}

function say(text) {
  $("status").textContent = text;
}

function note(kind, text) {
  const item = document.createElement("li");
  item.className = kind;
  item.textContent = `${kind}: ${text}`;
  $("messages").append(item);
}

function number(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function requestBody() {
  const body = { prompt: $("prompt").value, negative_prompt: $("negative").value };
  const fields = { steps: "steps", cfg_scale: "cfg", width: "width", height: "height", seed: "seed" };
  for (const [name, id] of Object.entries(fields)) {
    const value = number(id);
    if (value !== null) body[name] = value;
  }
  if ($("sampler").value) body.sampler_name = $("sampler").value;
  if ($("model").value) body.override_settings = { sd_model_checkpoint: $("model").value };
  if (state.initImage) {
    body.init_images = [state.initImage];
    const strength = number("strength");
    if (strength !== null) body.denoising_strength = strength;
  }
  return body;
}

async function generate(event) {
  if (event) event.preventDefault();
  if (state.job !== null) return;
  if (!$("prompt").value.trim()) {
    say("Write a prompt first.");
    $("prompt").focus();
    return;
  }
  $("messages").replaceChildren();
  busy(true);
  say("Sending the job…");
  setProgress(0);
  try {
    const answer = await getJSON("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
    });
    watch(answer.id, answer.events);
  } catch (error) {
    say(`Refused: ${error.message}`);
    busy(false);
  }
}

function busy(on) {
  $("generate").disabled = on;
  $("cancel").disabled = !on;
  $("form").setAttribute("aria-busy", on ? "true" : "false");
}

function setProgress(fraction) {
  $("progress").value = Math.max(0, Math.min(1, fraction));
}

// the job's events, as its `diffcli ... --json` would write them (docs/events.md)
function watch(id, url) {
  state.job = { id, images: 1, image: 1, count: 1, saved: [] };
  const source = new EventSource(url);
  state.source = source;
  source.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    if (state.job && event.job_id === state.job.id) handle(event);
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && state.source === source) {
      finish("Lost the job's progress stream; the gallery shows what was made.");
    }
  };
}

function handle(event) {
  const job = state.job;
  switch (event.event) {
    case "queued":
      say(`Waiting: ${event.position} job(s) ahead.`);
      break;
    case "start":
      job.images = event.images || 1;
      setProgress(0);
      say(`Job ${job.id}: ${event.task}, ${job.images} image(s).`);
      break;
    case "phase":
      say(`Job ${job.id}: ${event.phase === "load" && event.cached ? "model ready" : event.phase}…`);
      break;
    case "batch":
      job.image = event.image;
      job.count = event.count;
      break;
    case "step":
      setProgress((job.image - 1 + (job.count * event.step) / event.steps) / job.images);
      say(`Job ${job.id}: step ${event.step} of ${event.steps}`);
      break;
    case "preview":
      $("preview").src = event.url;
      $("preview").hidden = false;
      break;
    case "saved":
      job.saved.push(event.path);
      break;
    case "warning":
    case "info":
      note(event.event, event.message);
      break;
    case "done":
      setProgress(1);
      finish(`Done: ${event.images} image(s) in ${Number(event.total_s).toFixed(1)} s.`);
      break;
    case "error":
      finish(`Failed: ${event.detail}`);
      break;
  }
}

function finish(text) {
  if (state.source) state.source.close();
  state.source = null;
  const job = state.job;
  state.job = null;
  say(text);
  busy(false);
  $("preview").hidden = true;
  loadGallery(job ? job.saved : []);
}

async function cancel() {
  try {
    await getJSON("/sdapi/v1/interrupt", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    say("Cancelling…");
  } catch (error) {
    say(`Could not cancel: ${error.message}`);
  }
}

// -- the gallery ----------------------------------------------------------------------------------

async function loadGallery(fresh) {
  let listing;
  try {
    listing = await getJSON("/v1/gallery");
  } catch (error) {
    say(`Could not read the gallery: ${error.message}`);
    return;
  }
  const list = $("gallery");
  list.replaceChildren(...listing.images.map((item) => card(item, (fresh || []).includes(item.name))));
  $("gallery-empty").hidden = listing.images.length > 0;
}

function describe(settings) {
  const parts = [];
  if (settings.model) parts.push(settings.model);
  if (settings.width && settings.height) parts.push(`${settings.width}×${settings.height}`);
  if (settings.steps) parts.push(`${settings.steps} steps`);
  if (settings.cfg !== null && settings.cfg !== undefined) parts.push(`cfg ${settings.cfg}`);
  if (settings.scheduler) parts.push(settings.scheduler);
  if (settings.seed !== null && settings.seed !== undefined) parts.push(`seed ${settings.seed}`);
  return parts.join(" · ");
}

function card(item, fresh) {
  const settings = item.settings || {};
  const entry = document.createElement("li");
  if (fresh) entry.className = "fresh";
  const figure = document.createElement("figure");
  const image = document.createElement("img");
  image.src = item.url;
  image.alt = settings.prompt ? `Image: ${settings.prompt}` : `Image ${item.name}`;
  image.width = item.width;
  image.height = item.height;
  image.loading = "lazy";
  if (item.width <= 128 && item.height <= 128) image.className = "small";
  image.dataset.name = item.name;
  const caption = document.createElement("figcaption");
  const prompt = document.createElement("p");
  prompt.className = "prompt";
  prompt.textContent = settings.prompt || item.name;
  const facts = document.createElement("p");
  facts.className = "note";
  facts.textContent = describe(settings);
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Parameters";
  const text = document.createElement("pre");
  text.textContent = item.parameters || "(none recorded)";
  details.append(summary, text);
  const use = document.createElement("button");
  use.type = "button";
  use.className = "use";
  use.textContent = "Use these settings";
  use.addEventListener("click", () => useSettings(settings));
  const download = document.createElement("a");
  download.href = item.url;
  download.download = item.name;
  download.className = "button";
  download.textContent = "Download";
  download.setAttribute("aria-label", `Download ${item.name}`);
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(use, download);
  caption.append(prompt, facts, details, actions);
  figure.append(image, caption);
  entry.append(figure);
  return entry;
}

function useSettings(settings) {
  $("prompt").value = settings.prompt || "";
  $("negative").value = settings.negative || "";
  for (const id of ["steps", "cfg", "width", "height", "seed"]) {
    $(id).value = settings[id] === null || settings[id] === undefined ? "" : settings[id];
  }
  if (settings.strength !== null && settings.strength !== undefined) $("strength").value = settings.strength;
  if (settings.model) {
    if (![...$("model").options].some((o) => o.value === settings.model)) {
      $("model").append(option(settings.model, settings.model));
    }
    $("model").value = settings.model;
  }
  const sampler = state.samplers.find((s) => s.aliases.includes(settings.scheduler));
  $("sampler").value = sampler ? sampler.name : "";
  say("Settings taken from the image; press Generate to make it again.");
  $("prompt").focus();
}

// -- the start image (img2img) --------------------------------------------------------------------

function takeImage() {
  const file = $("init-image").files[0];
  if (!file) return clearImage();
  const reader = new FileReader();
  reader.onload = () => {
    const url = String(reader.result);
    state.initImage = url.slice(url.indexOf(",") + 1);
    $("init-preview").src = url;
    $("init-preview").hidden = false;
    $("clear-image").disabled = false;
  };
  reader.readAsDataURL(file);
}

function clearImage() {
  state.initImage = null;
  $("init-image").value = "";
  $("init-preview").hidden = true;
  $("init-preview").removeAttribute("src");
  $("clear-image").disabled = true;
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", generate);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generate(event);
  });
  $("cancel").addEventListener("click", cancel);
  $("refresh").addEventListener("click", () => loadGallery());
  $("init-image").addEventListener("change", takeImage);
  $("clear-image").addEventListener("click", clearImage);
  loadChoices();
  loadGallery();
});
