// Make: a generate form per kind and backend, built from GET /v1/backends (each knob's own JSON Schema).
import { ApiError, post } from "./api.js";
import { clear, h, toast } from "./dom.js";

const MAX_SEED = 2 ** 31 - 1; // the dice's range; any seed the server takes can be typed in

export function randomSeed() {
  const values = new Uint32Array(1);
  crypto.getRandomValues(values);
  return values[0] % MAX_SEED;
}

function describe(schema) {
  const bits = [];
  if (schema.description) bits.push(schema.description);
  if (schema.default !== undefined) bits.push(`default ${JSON.stringify(schema.default)}`);
  const low = schema.minimum ?? schema.exclusiveMinimum;
  const high = schema.maximum ?? schema.exclusiveMaximum;
  if (low !== undefined || high !== undefined) {
    const from = low === undefined ? "" : `${schema.exclusiveMinimum !== undefined ? ">" : "≥"} ${low}`;
    const to = high === undefined ? "" : `${schema.exclusiveMaximum !== undefined ? "<" : "≤"} ${high}`;
    bits.push([from, to].filter(Boolean).join(", "));
  }
  if (schema.multipleOf) bits.push(`a multiple of ${schema.multipleOf}`);
  return bits.join(" · ");
}

// A knob's value as typed -> the JSON value, or an error message, or undefined (empty: the knob's default).
export function readKnob(schema, raw) {
  if (raw === "" || raw === undefined || raw === null) return { value: undefined };
  const type = schema.type;
  if (type === "integer" || type === "number") {
    const number = Number(raw);
    if (!Number.isFinite(number)) return { error: "a number, please" };
    if (type === "integer" && !Number.isInteger(number)) return { error: "a whole number, please" };
    if (schema.minimum !== undefined && number < schema.minimum) return { error: `at least ${schema.minimum}` };
    if (schema.maximum !== undefined && number > schema.maximum) return { error: `at most ${schema.maximum}` };
    if (schema.exclusiveMinimum !== undefined && number <= schema.exclusiveMinimum)
      return { error: `more than ${schema.exclusiveMinimum}` };
    if (schema.exclusiveMaximum !== undefined && number >= schema.exclusiveMaximum)
      return { error: `less than ${schema.exclusiveMaximum}` };
    if (schema.multipleOf && number % schema.multipleOf !== 0) return { error: `a multiple of ${schema.multipleOf}` };
    return { value: number };
  }
  if (type === "boolean") return { value: raw === "true" };
  if (schema.format === "path") return { value: { asset: raw.trim() } }; // over HTTP an input image is an asset id
  if (type === "string") {
    if (schema.enum && !schema.enum.includes(raw)) return { error: `one of ${schema.enum.join(", ")}` };
    return { value: raw };
  }
  if (type === "array" && schema.items && schema.items.type === "string") {
    const items = raw.split("\n").filter((line) => line !== "");
    return items.length ? { value: items } : { value: undefined };
  }
  try { return { value: JSON.parse(raw) }; } catch { return { error: "JSON, please" }; }
}

function knobInput(name, schema, value) {
  const id = `knob-${name}`;
  const shown = value === undefined ? "" : value;
  let input;
  if (schema.type === "boolean") {
    input = h("select", { id }, h("option", { value: "" }, `default${schema.default === undefined ? "" : ` (${schema.default ? "on" : "off"})`}`),
      h("option", { value: "true" }, "on"), h("option", { value: "false" }, "off"));
    input.value = value === undefined ? "" : String(Boolean(value));
  } else if (schema.enum) {
    input = h("select", { id }, h("option", { value: "" }, `default${schema.default === undefined ? "" : ` (${schema.default})`}`),
      schema.enum.map((option) => h("option", { value: option }, option)));
    input.value = shown;
  } else if (schema.type === "integer" || schema.type === "number") {
    input = h("input", { id, type: "text", inputmode: schema.type === "integer" ? "numeric" : "decimal",
      placeholder: schema.default === undefined ? "default" : String(schema.default) });
    input.value = shown;
  } else if (schema.format === "path") {
    input = h("input", { id, type: "text", placeholder: "an image asset id (an asset's “use as input”)" });
    input.value = value && typeof value === "object" ? value.asset : shown;
  } else if (schema.type === "array" && schema.items && schema.items.type === "string") {
    input = h("textarea", { id, rows: 2, placeholder: "one per line" });
    input.value = Array.isArray(value) ? value.join("\n") : "";
  } else if (schema.type === "string") {
    input = h("input", { id, type: "text", placeholder: schema.default === undefined ? "" : String(schema.default) });
    input.value = shown;
  } else {
    input = h("textarea", { id, rows: 2, placeholder: "JSON" });
    input.value = value === undefined ? "" : JSON.stringify(value);
  }
  return input;
}

function field(name, label, input, help = "") {
  input.dataset.field = name;
  const error = h("p", { class: "field-error", id: `error-${name}`, role: "alert" });
  input.setAttribute("aria-describedby", `error-${name}${help ? ` help-${name}` : ""}`);
  if (help) input.title = help;
  return h("div", { class: "field", dataset: { field: name } },
    h("label", { for: input.id, title: help || undefined }, label),
    input,
    help ? h("p", { class: "help", id: `help-${name}` }, help) : null,
    error);
}

function modelOptions(catalog, kind, backendInfo) {
  const options = [h("option", { value: "" }, `backend default (${backendInfo.default_model || "none"})`)];
  const packs = catalog.models.packs.filter((p) => p.kind === kind && p.installed);
  if (packs.length) options.push(h("optgroup", { label: "packs" }, packs.map((p) => h("option", { value: p.model, title: p.summary }, p.model))));
  if (catalog.models.local.length)
    options.push(h("optgroup", { label: "server models" }, catalog.models.local.map((m) => h("option", { value: m }, m))));
  if (catalog.models.hub_cache.length)
    options.push(h("optgroup", { label: "Hub cache" }, catalog.models.hub_cache.map((m) => h("option", { value: m }, m))));
  return options;
}

// The form's controls, filled from `prefill` (a request: kind, backend, model, prompt, n, seed, best_of,
// min_score, params). `state` holds them with the catalog, the chosen kind and its backend's knobs.
function makeState(catalog, prefill) {
  const kinds = Object.keys(catalog.kinds);
  const seed = h("input", { id: "make-seed", type: "text", inputmode: "numeric", placeholder: "random" });
  const state = {
    catalog, kinds, kind: kinds.includes(prefill.kind) ? prefill.kind : kinds[0], knobs: {},
    form: h("form", { class: "make", novalidate: true }),
    kindSelect: h("select", { id: "make-kind" }, kinds.map((k) => h("option", { value: k }, k))),
    backendSelect: h("select", { id: "make-backend" }),
    modelSelect: h("select", { id: "make-model" }),
    prompt: h("textarea", { id: "make-prompt", rows: 3, required: true, placeholder: "What should it make?" }),
    n: h("input", { id: "make-n", type: "text", inputmode: "numeric", placeholder: "1" }),
    seed,
    dice: h("button", { type: "button", class: "dice", title: "A random seed", "aria-label": "Roll a random seed",
      onclick: () => { seed.value = String(randomSeed()); } }, "Roll"),
    bestOf: h("input", { id: "make-best-of", type: "text", inputmode: "numeric", placeholder: "off" }),
    minScore: h("input", { id: "make-min-score", type: "text", inputmode: "decimal", placeholder: "off" }),
    knobsBox: h("div", { class: "knobs" }),
    formError: h("p", { class: "error", id: "make-error", role: "alert" }),
    submit: h("button", { type: "submit", id: "make-submit" }, "Make"),
  };
  state.kindSelect.value = state.kind;
  state.prompt.value = prefill.prompt || "";
  state.n.value = prefill.n && prefill.n !== 1 ? String(prefill.n) : "";
  seed.value = prefill.seed === undefined || prefill.seed === null ? "" : String(prefill.seed);
  state.bestOf.value = prefill.best_of ? String(prefill.best_of) : "";
  state.minScore.value = prefill.min_score ? String(prefill.min_score) : "";
  return state;
}

function backendInfo(state) {
  return state.catalog.kinds[state.kind].backends[state.backendSelect.value];
}

function fillBackends(state, chosen) {
  const info = state.catalog.kinds[state.kind];
  clear(state.backendSelect, Object.entries(info.backends).map(([name, b]) => h("option", { value: name, title: b.summary }, name)));
  state.backendSelect.value = chosen && info.backends[chosen] ? chosen : info.default;
}

function fillModel(state, chosen) {
  const select = state.modelSelect;
  clear(select, modelOptions(state.catalog, state.kind, backendInfo(state)));
  if (chosen && ![...select.options].some((o) => o.value === chosen)) select.append(h("option", { value: chosen }, chosen));
  select.value = chosen || "";
}

function fillKnobs(state, values = {}) {
  state.knobs = backendInfo(state).knobs.properties;
  clear(state.knobsBox, Object.entries(state.knobs).map(([name, schema]) =>
    field(name, name.replaceAll("_", " "), knobInput(name, schema, values[name]), describe(schema))));
}

// Mark `message` next to the field `name` (or under the form when no field has that name); that field's input.
function showError(state, name, message) {
  const box = state.form.querySelector(`#error-${CSS.escape(name)}`);
  const input = state.form.querySelector(`[data-field="${CSS.escape(name)}"]:is(input, select, textarea)`);
  if (input) input.setAttribute("aria-invalid", "true");
  if (box) box.textContent = message;
  else state.formError.textContent = message;
  return input;
}

function clearErrors(state) {
  state.formError.textContent = "";
  state.form.querySelectorAll(".field-error").forEach((box) => { box.textContent = ""; });
  state.form.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
}

function readWhole(input, least, most) {
  if (input.value.trim() === "") return { value: undefined };
  const number = Number(input.value);
  if (!Number.isInteger(number) || number < least || number > most) return { error: `a whole number from ${least} to ${most}` };
  return { value: number };
}

// The request, or the errors found before sending it ([field, message] pairs).
function readRequest(state) {
  const errors = [];
  const body = { kind: state.kind, backend: state.backendSelect.value, prompt: state.prompt.value, params: {} };
  if (!state.prompt.value.trim()) errors.push(["prompt", "say what to make"]);
  if (state.modelSelect.value) body.model = state.modelSelect.value;
  for (const [input, name, least, most] of [[state.n, "n", 1, 1024], [state.seed, "seed", 0, Number.MAX_SAFE_INTEGER],
    [state.bestOf, "best_of", 1, 256]]) {
    const read = readWhole(input, least, most);
    if (read.error) errors.push([name, read.error]);
    else if (read.value !== undefined) body[name] = read.value;
  }
  if (state.minScore.value.trim() !== "") {
    const value = Number(state.minScore.value);
    if (!Number.isFinite(value) || value < 0 || value > 1) errors.push(["min_score", "a number from 0 to 1"]);
    else body.min_score = value;
  }
  for (const [name, schema] of Object.entries(state.knobs)) {
    const read = readKnob(schema, state.knobsBox.querySelector(`#knob-${CSS.escape(name)}`).value);
    if (read.error) errors.push([name, read.error]);
    else if (read.value !== undefined) body.params[name] = read.value;
  }
  return { body, errors };
}

// Check, then queue the job; the server's 422 goes next to the field it names.
async function send(state, queue, event) {
  if (event) event.preventDefault();
  clearErrors(state);
  const { body, errors } = readRequest(state);
  if (errors.length) {
    errors.forEach(([name, message]) => showError(state, name, message));
    showError(state, errors[0][0], errors[0][1])?.focus();
    return;
  }
  state.submit.disabled = true;
  try {
    const job = await post("/v1/jobs", body);
    queue.track(job);
    toast(`Queued job ${job.id}.`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const name = (error.field || "").replace(/^params\./, "");
    const input = name ? showError(state, name, error.message) : null;
    if (!input) state.formError.textContent = error.message;
    (input || state.prompt).focus();
  } finally {
    state.submit.disabled = false;
  }
}

function layout(state) {
  return [
    h("h1", {}, "Make"),
    h("div", { class: "grid3" },
      field("kind", "Kind", state.kindSelect),
      field("backend", "Backend", state.backendSelect, "the generator within the kind"),
      field("model", "Model", state.modelSelect, "what the server has: packs, its --models, the Hub cache")),
    field("prompt", "Prompt", state.prompt, "Ctrl+Enter makes it"),
    h("div", { class: "grid4" },
      field("n", "n", state.n, "outputs per prompt"),
      h("div", { class: "field seed", dataset: { field: "seed-wrap" } },
        field("seed", "Seed", state.seed, "output i gets seed + i; empty: a fresh one"), state.dice),
      field("best_of", "best of", state.bestOf, "score this many candidates per prompt and keep the best n"),
      field("min_score", "min score", state.minScore, "re-sample until outputs score this (0-1)")),
    h("details", { class: "knob-box", open: true }, h("summary", {}, "Knobs"), state.knobsBox),
    state.formError,
    h("div", { class: "row" }, state.submit, h("span", { class: "hint" }, "Ctrl+Enter")),
  ];
}

// The Make view, pre-filled from `prefill` (a remix, "use as input", or nothing).
export function renderMake(view, catalog, queue, prefill = {}) {
  const state = makeState(catalog, prefill);
  fillBackends(state, prefill.backend);
  fillModel(state, prefill.model);
  fillKnobs(state, prefill.params || {});
  state.kindSelect.addEventListener("change", () => {
    state.kind = state.kindSelect.value;
    fillBackends(state);
    fillModel(state);
    fillKnobs(state);
  });
  state.backendSelect.addEventListener("change", () => { fillModel(state); fillKnobs(state); });
  state.form.addEventListener("submit", (event) => send(state, queue, event));
  state.form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send(state, queue, event);
  });
  state.form.append(...layout(state));
  clear(view, state.form);
  state.prompt.focus();
}
