// What the edit tools share (edit.js, control.js): their forms (fields read against the knobs' own JSON Schemas, a
// one-line error: the form's check or the server's message), the models a backend runs, the asset's own knobs an
// edit keeps, and sending the job (POST /v1/jobs), which the queue panel and the edit panel then follow.
import { ApiError, post } from "./api.js";
import { h, toast } from "./dom.js";
import { readKnob } from "./make.js";

const STYLE = ["steps", "guidance", "scheduler", "negative_prompt"]; // what an edit keeps of the asset's own knobs

export function backends(catalog) {
  return catalog.kinds.image?.backends || {};
}

// The image backend that declares `knob`: the asset's own when it does, else the first that does (or null).
export function backendWith(catalog, own, knob) {
  const all = backends(catalog);
  if (all[own]?.knobs.properties[knob]) return own;
  return Object.keys(all).find((name) => all[name].knobs.properties[knob]) || null;
}

export function input(id, schema = {}, value = "") {
  const numeric = schema.type === "integer" || schema.type === "number";
  const node = h("input", { id, type: "text", inputmode: numeric ? (schema.type === "integer" ? "numeric" : "decimal") : undefined,
    placeholder: schema.default === undefined ? "" : String(schema.default) });
  node.value = value;
  return node;
}

export function field(label, control, help = "") {
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control,
    help ? h("p", { class: "help" }, help) : null);
}

// A tool's form: its fields, a one-line error (the form's own check, or the server's message) and its Run button.
export function form(tool, name, fields, run, label = "Run") {
  const error = h("p", { class: "error", id: `${name}-error`, role: "alert" });
  const button = h("button", { type: "submit", id: `${name}-run` }, label);
  const node = h("form", { class: "edit-form", id: `${name}-form`, novalidate: true }, fields, error, h("div", { class: "row" }, button));
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    node.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    button.disabled = true;
    try {
      const body = await run();
      if (body) await submit(tool, body);
    } catch (problem) {
      if (!(problem instanceof ApiError || problem instanceof FormError)) throw problem;
      error.textContent = problem.message;
      if (problem.input) { problem.input.setAttribute("aria-invalid", "true"); problem.input.focus(); }
    } finally {
      button.disabled = false;
    }
  });
  return node;
}

export class FormError extends Error {
  constructor(message, input = null) {
    super(message);
    this.input = input;
  }
}

// A knob's value from its input, checked against its schema (undefined when left empty: the knob's default).
export function knob(name, schema, node) {
  const read = readKnob(schema || {}, node.value.trim());
  if (read.error) throw new FormError(`${name}: ${read.error}`, node);
  return read.value;
}

export function prompt(id, text) {
  const node = h("textarea", { id, rows: 2 });
  node.value = text || "";
  return node;
}

// The models `backend` runs: the asset's own first (when it is that backend's), then the server's, then its default.
export function modelSelect(id, tool, backend) {
  const info = backends(tool.catalog)[backend];
  const own = tool.record.backend === backend ? tool.model : null;
  const names = [...new Set([own, ...(info.models || [])].filter(Boolean))];
  return h("select", { id }, names.map((name) => h("option", { value: name }, name)),
    h("option", { value: "" }, `backend default (${info.default_model || "none"})`));
}

// The asset's own knobs an edit keeps (steps, guidance, ...), where the edit runs on its backend.
export function style(tool, backend) {
  if (tool.record.backend !== backend) return {};
  const from = tool.request?.params || tool.record.params || {};
  return Object.fromEntries(STYLE.filter((name) => from[name] !== undefined && from[name] !== null).map((name) => [name, from[name]]));
}

export function request(backend, model, promptText, params) {
  const body = { kind: "image", backend, prompt: promptText, params };
  if (model) body.model = model;
  return body;
}

// Knobs left empty (undefined) are not sent: the backend's defaults apply.
export function drop(params) {
  return Object.fromEntries(Object.entries(params).filter(([, value]) => value !== undefined));
}

// Queue the job; the queue panel shows it, and the edit panel's results list follows it until it ends.
export async function submit(tool, body) {
  const job = await post("/v1/jobs", body);
  tool.queue.track(job);
  toast(`Queued job ${job.id}.`);
  const row = h("li", { dataset: { job: job.id, state: job.state } },
    h("span", { class: "stage" }, `${tool.title}: job ${job.id} queued`));
  tool.results.prepend(row);
  tool.watching.set(job.id, { row, title: tool.title });
}
