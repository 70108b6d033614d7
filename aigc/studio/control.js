// Control with this: a ControlNet steered by this image (or an upload), its control map previewed first (POST
// /v1/control/preview: what the preprocessor makes of the image, before anything runs).
import { ApiError, call } from "./api.js";
import { clear, h } from "./dom.js";
import { backends, backendWith, drop, field, form, FormError, input, knob, modelSelect, prompt, request, style } from "./tool.js";

export function control(tool) {
  const backend = backendWith(tool.catalog, tool.record.backend, "control");
  if (!backend) return h("p", { class: "hint" }, "No backend on this server takes a ControlNet.");
  const entry = backends(tool.catalog)[backend].knobs.properties.control.items.properties;
  const names = tool.catalog.models.controlnets || [];
  const preprocessors = tool.catalog.preprocessors || { none: { help: "", options: {} } };
  const state = { upload: null, shown: null, timer: null, asked: 0 };
  const mine = h("input", { type: "radio", name: "control-source", id: "control-source-asset", value: "asset", checked: true });
  const theirs = h("input", { type: "radio", name: "control-source", id: "control-source-upload", value: "upload" });
  const file = h("input", { type: "file", id: "control-file", accept: "image/png,image/jpeg,image/webp" });
  const preprocess = h("select", { id: "control-preprocess" }, Object.keys(preprocessors).map((name) => h("option", { value: name }, name)));
  preprocess.value = preprocessors.canny ? "canny" : Object.keys(preprocessors)[0];
  const help = h("p", { class: "help", id: "control-preprocess-help" });
  const options = h("div", { class: "grid3", id: "control-options" });
  const picture = h("img", { id: "control-preview", alt: "the control map the ControlNet will see", hidden: true });
  const status = h("p", { class: "hint", id: "control-preview-status", role: "status" });
  const net = h("select", { id: "control-model" }, names.map((name) => h("option", { value: name }, name)));
  const scale = input("control-scale", entry.scale);
  const text = prompt("control-prompt", tool.record.prompt);
  const model = modelSelect("control-base", tool, backend);

  const image = () => (theirs.checked && state.upload ? state.upload : { asset: tool.meta.id });
  const chosen = () => Object.fromEntries([...options.querySelectorAll("input")].map((node) => [node.dataset.option,
    knob(node.dataset.option, preprocessors[preprocess.value].options[node.dataset.option], node)]).filter(([, v]) => v !== undefined));
  const fillOptions = () => {
    const spec = preprocessors[preprocess.value];
    help.textContent = spec.help;
    clear(options, Object.entries(spec.options).map(([name, schema]) => {
      const node = input(`control-option-${name}`, schema);
      node.dataset.option = name;
      return field(name, node, `${schema.minimum}-${schema.maximum}`);
    }));
  };
  const show = async () => {  // only the latest request's answer is shown, whichever order they arrive in
    const asked = ++state.asked;
    status.textContent = "Making the control map…";
    try {
      const answer = await call("/v1/control/preview", { method: "POST", raw: true,
        body: { image: image(), preprocess: preprocess.value, options: chosen() } });
      const map = await answer.blob();
      if (asked !== state.asked) return;
      if (state.shown) URL.revokeObjectURL(state.shown);
      state.shown = URL.createObjectURL(map);
      picture.src = state.shown;
      picture.hidden = false;
      status.textContent = `${preprocess.value}: what the ControlNet will see.`;
    } catch (problem) {
      if (!(problem instanceof ApiError || problem instanceof FormError)) throw problem;
      if (asked === state.asked) status.textContent = problem.message;
    }
  };
  const later = () => { clearTimeout(state.timer); state.timer = setTimeout(show, 300); };
  preprocess.addEventListener("change", () => { fillOptions(); show(); });
  options.addEventListener("input", later);
  mine.addEventListener("change", show);
  theirs.addEventListener("change", () => { if (state.upload) show(); else file.click(); });
  file.addEventListener("change", () => {
    const chosenFile = file.files[0];
    if (!chosenFile) return;
    const reader = new FileReader();
    reader.onload = () => { state.upload = reader.result; theirs.checked = true; show(); };
    reader.readAsDataURL(chosenFile);
  });
  fillOptions();
  show();
  const run = () => {
    if (!net.value) throw new FormError("the server has no ControlNet in its --models to steer with.");
    const entryValue = drop({ model: net.value, image: image(), preprocess: preprocess.value, options: chosen(),
      scale: knob("scale", entry.scale, scale) });
    return request(backend, model.value, text.value, { ...style(tool, backend), control: [entryValue] });
  };
  return [
    h("fieldset", { class: "source" }, h("legend", {}, "Control image"),
      h("label", { class: "inline" }, mine, " this image"), h("label", { class: "inline" }, theirs, " an upload: "), file),
    h("div", { class: "control-view" }, h("div", {}, field("Preprocessor", preprocess), help, options,
      h("button", { type: "button", id: "control-preview-button", class: "quiet", onclick: show }, "Preview")),
    h("figure", {}, picture, h("figcaption", {}, status))),
    names.length ? null : h("p", { class: "hint", id: "control-none" }, "The server has no ControlNet in its --models; the preview still works."),
    form(tool, "control", [h("div", { class: "grid3" }, field("ControlNet", net), field("Control scale", scale, "0-2"),
      field(`Model (${backend})`, model)), field("Prompt", text)], run),
  ];
}
