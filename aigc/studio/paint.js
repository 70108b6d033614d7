// The mask painter: a <canvas> at the image's own pixel size laid over it (scaled with it for display), where
// painted = white = repaint and unpainted = black = keep. The canvas is the mask itself: what it holds is what is sent,
// as a grey-level PNG of exactly the image's size (png.js). Brush and eraser strokes, invert and clear.
import { h } from "./dom.js";
import { dataUrl, greyPng } from "./png.js";

export function maskPainter(image) {
  const width = image.naturalWidth;
  const height = image.naturalHeight;
  const canvas = h("canvas", { id: "mask-canvas", width, height, class: "mask",
    "aria-label": "the mask: paint over what to repaint" });
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const painter = { canvas, width, height, mode: "brush", size: Math.max(2, Math.round(Math.min(width, height) / 12)) };
  let last = null;

  const fill = (colour) => { g.fillStyle = colour; g.fillRect(0, 0, width, height); };
  // a pointer's place in image pixels, whatever size the canvas is shown at
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (width / box.width), (event.clientY - box.top) * (height / box.height)];
  };
  const ink = () => (painter.mode === "brush" ? "#fff" : "#000");
  const dot = ([x, y]) => {
    g.fillStyle = ink();
    g.beginPath();
    g.arc(x, y, painter.size / 2, 0, 2 * Math.PI);
    g.fill();
  };
  const line = (from, to) => {
    Object.assign(g, { strokeStyle: ink(), lineWidth: painter.size, lineCap: "round", lineJoin: "round" });
    g.beginPath();
    g.moveTo(...from);
    g.lineTo(...to);
    g.stroke();
  };

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    dot(last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const point = at(event);
    line(last, point);
    last = point;
  });
  for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) canvas.addEventListener(name, () => { last = null; });

  const pixels = () => g.getImageData(0, 0, width, height);
  painter.clear = () => fill("#000");
  painter.invert = () => {
    const data = pixels();
    for (let i = 0; i < data.data.length; i += 4) {
      const value = 255 - data.data[i];
      data.data.set([value, value, value, 255], i);
    }
    g.putImageData(data, 0, 0);
  };
  painter.empty = () => !pixels().data.some((value, i) => i % 4 !== 3 && value !== 0);
  // the mask as a data URL: a grey-level PNG (no alpha) of the image's size
  painter.png = async () => {
    const rgba = pixels().data;
    const grey = new Uint8Array(width * height);
    for (let i = 0; i < grey.length; i++) grey[i] = rgba[4 * i];
    return dataUrl(await greyPng(width, height, grey));
  };
  painter.clear();
  return painter;
}

// The painter's controls: brush / eraser, brush size (in image pixels), invert, clear.
export function painterControls(painter) {
  const brush = h("button", { type: "button", id: "mask-brush", class: "tool", "aria-pressed": "true" }, "Brush");
  const eraser = h("button", { type: "button", id: "mask-eraser", class: "tool", "aria-pressed": "false" }, "Eraser");
  const pick = (mode) => {
    painter.mode = mode;
    brush.setAttribute("aria-pressed", String(mode === "brush"));
    eraser.setAttribute("aria-pressed", String(mode === "eraser"));
  };
  brush.addEventListener("click", () => pick("brush"));
  eraser.addEventListener("click", () => pick("eraser"));
  const most = Math.max(8, Math.round(Math.min(painter.width, painter.height) / 3));
  const size = h("input", { id: "mask-size", type: "range", min: 1, max: most, step: 1 });
  size.value = String(painter.size);
  const shown = h("output", { for: "mask-size", id: "mask-size-shown" }, `${painter.size} px`);
  size.addEventListener("input", () => {
    painter.size = Number(size.value);
    shown.textContent = `${painter.size} px`;
  });
  return h("div", { class: "row painter-tools", role: "group", "aria-label": "mask tools" },
    brush, eraser,
    h("label", { for: "mask-size", class: "inline" }, "Size"), size, shown,
    h("button", { type: "button", id: "mask-invert", class: "quiet", onclick: () => painter.invert() }, "Invert"),
    h("button", { type: "button", id: "mask-clear", class: "quiet", onclick: () => painter.clear() }, "Clear"));
}
