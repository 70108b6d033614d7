// Chain: run a recipe of the server's pipelines/ (its inputs as a form), then follow the chain step by step, each
// step's assets linked to their pages (what the run report page shows).
import { ApiError, get, post } from "./api.js";
import { clear, h, toast } from "./dom.js";
import { card } from "./gallery.js";
import { randomSeed } from "./make.js";

export async function renderChains(view, catalog, queue) {
  const names = catalog.pipelines || [];
  const picker = h("select", { id: "chain-recipe" }, names.map((name) => h("option", { value: name }, name)));
  const formBox = h("div", { id: "chain-form" });
  clear(view, h("h1", {}, "Chain"),
    names.length ? h("div", { class: "field" }, h("label", { for: "chain-recipe" }, "Recipe"), picker)
      : h("p", { class: "hint" }, "The server has no pipelines (aigc serve --pipelines DIR)."),
    formBox);
  async function show() {
    if (!picker.value) return;
    const pipeline = await get(`/v1/pipelines/${encodeURIComponent(picker.value)}`);
    const inputs = Object.entries(pipeline.inputs).map(([name, value]) => {
      const input = h("input", { id: `chain-input-${name}`, type: "text", dataset: { field: name } });
      input.value = value;
      return h("div", { class: "field" }, h("label", { for: input.id }, name), input);
    });
    const seed = h("input", { id: "chain-seed", type: "text", inputmode: "numeric" });
    seed.value = String(randomSeed());
    const error = h("p", { class: "error", role: "alert" });
    const form = h("form", { class: "make" }, inputs,
      h("div", { class: "field" }, h("label", { for: "chain-seed" }, "Seed"), seed),
      h("ol", { class: "steps" }, pipeline.steps.map((step) => h("li", {},
        h("strong", {}, step.name), ` · ${step.kind} × ${step.n} · `, h("code", {}, step.prompt)))),
      error, h("div", { class: "row" }, h("button", { type: "submit" }, "Run chain")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const values = Object.fromEntries(Object.keys(pipeline.inputs).map((name) => [name, form.querySelector(`#chain-input-${CSS.escape(name)}`).value]));
      try {
        const job = await post("/v1/jobs", { type: "run", recipe: pipeline.name, inputs: values, seed: Number(seed.value) || 0 });
        queue.track(job);
        location.hash = `#/chain/${job.id}`;
      } catch (failure) {
        if (failure instanceof ApiError) error.textContent = failure.message; else throw failure;
      }
    });
    clear(formBox, form);
  }
  picker.addEventListener("change", show);
  await show();
}

export async function renderChain(view, id, queue) {
  const job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
  const pipeline = job.request?.recipe ? await get(`/v1/pipelines/${encodeURIComponent(job.request.recipe)}`).catch(() => null) : null;
  const assets = (await get(`/v1/assets?job=${job.id}&limit=500&order=asc`)).assets;
  const steps = pipeline ? pipeline.steps.map((s) => s.name) : [...new Set(assets.map((a) => a.workflow?.step))];
  const sections = steps.map((name) => {
    const step = pipeline?.steps.find((s) => s.name === name);
    const mine = assets.filter((a) => a.workflow?.step === name).sort((a, b) => a.position - b.position);
    return h("section", { class: "chain-step", dataset: { step: name } },
      h("h2", {}, name, step ? ` · ${step.kind}` : ""),
      step ? h("p", { class: "hint" }, "prompt template: ", h("code", {}, step.prompt)) : null,
      mine.length ? h("div", { class: "grid" }, mine.map((asset) => h("div", {}, card(asset),
        asset.workflow?.parents?.length ? h("p", { class: "hint" }, `from ${asset.workflow.parents.join(", ")}`) : null)))
        : h("p", { class: "hint" }, job.state === "done" ? "no assets" : "not made yet"));
  });
  clear(view, h("h1", {}, `Chain ${job.request?.recipe || "(inline)"}`),
    h("p", { class: "hint" }, `job ${job.id} · ${job.state}${job.progress?.total ? ` · ${job.progress.step}/${job.progress.total}` : ""}`),
    job.error ? h("p", { class: "error" }, job.error.message) : null, sections);
  let timer;
  queue.onChange((changed, event) => {
    if (changed.id !== id || !["asset", "done", "failed", "cancelled"].includes(event.event)) return;
    clearTimeout(timer);
    timer = setTimeout(() => renderChain(view, id, queue).catch((e) => toast(e.message)), 300);
  });
}
