// Edit an image asset: Inpaint (a mask painter over it, paint.js), Outpaint, Upscale, Hires fix, and Control with
// this (control.js). Each tool sends an ordinary job (POST /v1/jobs) that the queue panel follows; its result is
// linked here when it is done.
import { ApiError, get } from "./api.js";
import { control } from "./control.js";
import { clear, h, toast } from "./dom.js";
import { maskPainter, painterControls } from "./paint.js";
import { backends, backendWith, drop, field, form, FormError, input, knob, modelSelect, prompt, request, style } from "./tool.js";

const ENDED = ["done", "failed", "cancelled"];

// A followed job has ended: link its result (with a thumbnail), or say why it made none.
async function ended(tool, id) {
  const watched = tool.watching.get(id);
  tool.watching.delete(id);
  const job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
  watched.row.dataset.state = job.state;
  if (job.state !== "done" || !job.assets.length) {
    clear(watched.row, h("span", { class: "error" }, `${watched.title}: ${job.error?.message || job.state}`));
    return;
  }
  const meta = await get(`/v1/assets/${job.assets[0].id}/meta`);
  clear(watched.row, h("a", { href: `#/asset/${meta.id}`, class: "result", dataset: { asset: meta.id } },
    meta.thumbnail ? h("img", { src: meta.thumbnail, alt: "", width: 64, height: 64 }) : null,
    `${watched.title}: open the result`));
}

// --- the tools ----------------------------------------------------------------------------------------------------

async function inpaint(tool) {
  const backend = backendWith(tool.catalog, tool.record.backend, "mask");
  if (!backend) return h("p", { class: "hint" }, "No backend on this server inpaints.");
  const knobs = backends(tool.catalog)[backend].knobs.properties;
  const image = h("img", { src: tool.meta.src, alt: tool.record.prompt || "the image" });
  try {
    await image.decode();
  } catch {
    return h("p", { class: "error" }, "The image did not load; reload the page to try again.");
  }
  const painter = maskPainter(image);
  const text = prompt("inpaint-prompt", tool.record.prompt);
  const model = modelSelect("inpaint-model", tool, backend);
  const blur = input("inpaint-mask-blur", knobs.mask_blur);
  const strength = input("inpaint-strength", knobs.strength);
  const run = async () => {
    if (painter.empty()) throw new FormError("paint over what to repaint first (white = repaint, black = keep).");
    return request(backend, model.value, text.value, drop({ ...style(tool, backend), init_image: { asset: tool.meta.id },
      mask: await painter.png(), mask_blur: knob("mask blur", knobs.mask_blur, blur),
      strength: knob("strength", knobs.strength, strength) }));
  };
  return [
    h("p", { class: "hint" }, "Paint over what to repaint (white); what stays unpainted (black) is kept exactly."),
    painterControls(painter),
    h("div", { class: "painter" }, image, painter.canvas),
    form(tool, "inpaint", [field("Prompt", text), h("div", { class: "grid3" }, field(`Model (${backend})`, model),
      field("Mask blur (px)", blur, "softens the mask's edge"), field("Strength", strength, "how much to repaint, 0-1"))], run),
  ];
}

function outpaint(tool) {
  const backend = backendWith(tool.catalog, tool.record.backend, "outpaint");
  if (!backend) return h("p", { class: "hint" }, "No backend on this server outpaints.");
  const knobs = backends(tool.catalog)[backend].knobs.properties;
  const side = (knobs.outpaint.anyOf || [knobs.outpaint]).find((schema) => schema.type === "integer") || { type: "integer" };
  const sides = ["left", "top", "right", "bottom"].map((name) => [name, input(`outpaint-${name}`, { ...side, default: 0 })]);
  const text = prompt("outpaint-prompt", tool.record.prompt);
  const model = modelSelect("outpaint-model", tool, backend);
  const blur = input("outpaint-mask-blur", knobs.mask_blur);
  const run = () => {
    const grow = sides.map(([name, node]) => knob(name, side, node) || 0);
    if (!grow.some(Boolean)) throw new FormError("grow at least one side: pixels to add, multiples of 8.", sides[0][1]);
    return request(backend, model.value, text.value, drop({ ...style(tool, backend), init_image: { asset: tool.meta.id },
      outpaint: grow, mask_blur: knob("mask blur", knobs.mask_blur, blur) }));
  };
  return [
    h("p", { class: "hint" }, `Pixels to add on each side (multiples of ${side.multipleOf || 1}); the image itself is kept.`),
    form(tool, "outpaint", [h("div", { class: "grid4" }, sides.map(([name, node]) => field(name, node))),
      field("Prompt", text), h("div", { class: "grid3" }, field(`Model (${backend})`, model), field("Mask blur (px)", blur))], run),
  ];
}

function upscale(tool) {
  const models = backends(tool.catalog).upscale?.models || [];
  const model = h("select", { id: "upscale-model" }, models.map((name) => h("option", { value: name }, name)));
  let factor = 2;
  const run = () => request("upscale", model.value, "", { init_image: { asset: tool.meta.id }, scale: factor });
  const node = form(tool, "upscale", [field("Upscaler", model, "the server's upscaling models")], run, "Upscale x2");
  const x4 = h("button", { type: "submit", id: "upscale-x4" }, "Upscale x4");
  const x2 = node.querySelector("#upscale-run");
  x2.id = "upscale-x2";
  x2.addEventListener("click", () => { factor = 2; });
  x4.addEventListener("click", () => { factor = 4; });
  x2.after(x4);
  return node;
}

// The hires fix: the asset's own request again, one output at its own seed, with `hires`.
function hires(tool) {
  const knobs = backends(tool.catalog)[tool.record.backend].knobs.properties;
  const factor = h("select", { id: "hires-factor" }, [1.5, 2].map((f) => h("option", { value: f }, `x${f}`)));
  factor.value = "2";
  const strength = input("hires-strength", knobs.hires_strength);
  const run = () => {
    const params = { ...(tool.request?.params || style(tool, tool.record.backend)) };
    for (const name of Object.keys(params)) if (name.startsWith("hires")) delete params[name];
    return { ...request(tool.record.backend, tool.model, tool.record.prompt, drop({ ...params, hires: Number(factor.value),
      hires_strength: knob("strength", knobs.hires_strength, strength) })), seed: tool.record.seed, n: 1 };
  };
  return [
    h("p", { class: "hint" }, `The same image again (seed ${tool.record.seed}), made larger and repainted at the new size.`),
    form(tool, "hires", [h("div", { class: "grid3" }, field("Factor", factor), field("Strength", strength, "how much the second pass repaints"))], run),
  ];
}

// The Edit row, its panel (one tool open at a time) and the edit jobs' results, for an image asset's page. `job` is
// the asset's job: a generate job's request names the model as it was asked for, and the knobs as given.
export function editTools(meta, job, ctx) {
  const record = meta.record;
  const all = backends(ctx.catalog);
  const asked = job.type === "generate" ? job.request : null;
  const tool = { meta, record, request: asked, catalog: ctx.catalog, queue: ctx.queue, title: "",
    model: asked?.model || record.model || null, watching: new Map(),
    results: h("ul", { id: "edit-results", class: "edit-results", "aria-live": "polite" }) };
  const panel = h("section", { id: "edit-panel", class: "edit-panel", hidden: true, "aria-labelledby": "edit-title" });
  const params = asked?.params || record.params || {};
  const textToImage = !["init_image", "mask", "outpaint", "control"].some((name) => params[name]);
  const upscalers = all.upscale?.models || [];
  const tools = [
    ["inpaint", "Inpaint", inpaint, true],
    ["outpaint", "Outpaint", outpaint, true],
    ["upscale", "Upscale", upscale, upscalers.length > 0],
    ["hires", "Hires fix", hires, Boolean(all[record.backend]?.knobs.properties.hires) && textToImage],
    ["control", "Control with this", control, true],
  ];
  const buttons = tools.filter(([, , , shown]) => shown).map(([name, title, make]) => {
    const button = h("button", { type: "button", id: `edit-${name}`, class: "quiet", "aria-expanded": "false",
      "aria-controls": "edit-panel" }, title);
    button.addEventListener("click", async () => {
      const open = button.getAttribute("aria-expanded") === "true";
      buttons.forEach((other) => other.setAttribute("aria-expanded", "false"));
      if (open) { panel.hidden = true; return; }
      button.setAttribute("aria-expanded", "true");
      tool.title = title;
      clear(panel, h("h2", { id: "edit-title" }, title), h("p", { class: "hint" }, "Loading…"));
      panel.hidden = false;
      clear(panel, h("h2", { id: "edit-title", tabindex: -1 }, title), await make(tool));
      panel.querySelector("input, select, textarea, button")?.focus();
    });
    return button;
  });
  ctx.queue.onChange((changed) => {
    if (!tool.watching.has(changed.id) || !ENDED.includes(changed.state)) return;
    ended(tool, changed.id).catch((problem) => { if (problem instanceof ApiError) toast(problem.message); else throw problem; });
  });
  const note = upscalers.length ? null : h("p", { class: "hint", id: "upscale-none" },
    "Upscaling needs an upscaler model in the server's --models (an ESRGAN-family .pth or .safetensors file).");
  return h("div", { class: "edit" },
    h("div", { class: "row actions", id: "edit-actions", role: "group", "aria-label": "Edit this image" },
      h("span", { class: "hint" }, "Edit:"), buttons),
    note, panel, tool.results);
}
