// Browse: every asset as a card (image thumbnails, audio players, text excerpts), filtered and sorted by the
// server (GET /v1/assets, keyset-paged), loaded a page at a time as the grid scrolls.
import { ApiError, call, get } from "./api.js";
import { clear, download, fmtScore, h, toast } from "./dom.js";

const FILTERS = ["kind", "q", "owner", "job", "since", "until", "min_score", "sort", "order"];

export function card(asset, { selectable = null } = {}) {
  let media;
  if (asset.kind === "image") {
    media = h("img", { src: asset.thumbnail, alt: asset.prompt || "image", loading: "lazy", width: 256, height: 256 });
  } else if (asset.kind === "audio") {
    media = h("audio", { controls: true, preload: "metadata", src: asset.src, "aria-label": `audio: ${asset.prompt || ""}` });
  } else {
    media = h("p", { class: "excerpt" }, asset.excerpt || "");
  }
  const mine = asset.ratings?.mine;
  return h("article", { class: `card ${asset.kind}`, dataset: { asset: asset.id, kind: asset.kind } },
    h("a", { href: `#/asset/${asset.id}`, class: "card-media", "aria-label": `open ${asset.kind} asset` }, media),
    h("div", { class: "card-body" },
      h("p", { class: "prompt" }, asset.prompt || ""),
      h("div", { class: "card-meta" },
        h("span", { class: "score", title: "creativity score" }, `score ${fmtScore(asset.score)}`),
        h("span", { class: "seed" }, `seed ${asset.seed ?? "—"}`),
        mine ? h("span", { class: "my-rating", title: "your rating" }, mine.value > 0 ? "▲ you" : "▼ you") : null,
        selectable ? h("label", { class: "pick" }, selectable, "select") : null)));
}

export function renderGallery(view, params, queue) {
  const selected = new Set();
  const controls = {};
  const form = h("form", { class: "filters", role: "search" });
  const add = (name, label, input) => {
    controls[name] = input;
    input.id = `filter-${name}`;
    input.value = params.get(name) || input.value;
    form.append(h("div", { class: "field" }, h("label", { for: input.id }, label), input));
  };
  add("kind", "Kind", h("select", {}, ["", "text", "image", "audio"].map((k) => h("option", { value: k }, k || "all"))));
  add("q", "Prompt words", h("input", { type: "search", placeholder: "any words" }));
  add("owner", "Owner", h("input", { type: "text", placeholder: "anyone" }));
  add("job", "Job", h("input", { type: "text", placeholder: "job id" }));
  add("since", "From", h("input", { type: "date" }));
  add("until", "Until", h("input", { type: "date" }));
  add("min_score", "Min score", h("input", { type: "text", inputmode: "decimal", placeholder: "0-1" }));
  add("sort", "Sort", h("select", {}, h("option", { value: "time" }, "newest"), h("option", { value: "score" }, "score")));
  add("order", "Order", h("select", {}, h("option", { value: "desc" }, "high/new first"), h("option", { value: "asc" }, "low/old first")));
  const error = h("p", { class: "error", id: "gallery-error", role: "alert" });
  const grid = h("div", { class: "grid", id: "gallery-grid" });
  const status = h("p", { class: "hint", id: "gallery-status" });
  const more = h("button", { type: "button", class: "quiet", id: "gallery-more", hidden: true }, "Load more");
  const zip = h("button", { type: "button", id: "gallery-zip", disabled: true }, "Download selected (zip)");
  let cursor = null;
  let loading = false;
  let generation = 0;

  function query() {
    const out = new URLSearchParams();
    for (const name of FILTERS) {
      let value = controls[name].value.trim();
      if (!value) continue;
      if (name === "until" && /^\d{4}-\d{2}-\d{2}$/.test(value)) { // the whole day
        const day = new Date(`${value}T00:00:00Z`);
        day.setUTCDate(day.getUTCDate() + 1);
        value = day.toISOString().slice(0, 10);
      }
      out.set(name, value);
    }
    return out;
  }

  async function load(reset) {
    if (loading && !reset) return;
    loading = true;
    const mine = reset ? ++generation : generation;
    const q = query();
    q.set("limit", "48");
    if (!reset && cursor) q.set("cursor", cursor);
    error.textContent = "";
    try {
      const page = await get(`/v1/assets?${q}`);
      if (mine !== generation) return;
      if (reset) grid.replaceChildren();
      for (const asset of page.assets) {
        const box = h("input", { type: "checkbox", "aria-label": `select asset ${asset.id}` });
        box.checked = selected.has(asset.id);
        box.addEventListener("change", () => {
          if (box.checked) selected.add(asset.id); else selected.delete(asset.id);
          zip.disabled = selected.size === 0;
          zip.textContent = `Download selected (${selected.size}, zip)`;
        });
        grid.append(card(asset, { selectable: box }));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      status.textContent = `${page.total} asset${page.total === 1 ? "" : "s"}`;
    } catch (failure) {
      if (!(failure instanceof ApiError)) throw failure;
      error.textContent = failure.message;
      if (failure.field && controls[failure.field]) controls[failure.field].setAttribute("aria-invalid", "true");
    } finally {
      loading = false;
    }
  }

  function applyFilters() {
    Object.values(controls).forEach((c) => c.removeAttribute("aria-invalid"));
    const shown = query();
    history.replaceState(null, "", `#/gallery${shown.toString() ? `?${shown}` : ""}`);
    cursor = null;
    load(true);
  }

  let typing;
  const changed = (event) => { // typing waits for a pause; a choice (select, date) applies at once
    clearTimeout(typing);
    typing = setTimeout(applyFilters, event.type === "change" || event.target.tagName === "SELECT" ? 0 : 350);
  };
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  form.addEventListener("submit", (event) => { event.preventDefault(); applyFilters(); });
  more.addEventListener("click", () => load(false));
  zip.addEventListener("click", async () => {
    try {
      const response = await call("/v1/assets/zip", { method: "POST", body: { ids: [...selected] }, raw: true });
      download(await response.blob(), "aigc-assets.zip");
    } catch (failure) {
      if (failure instanceof ApiError) toast(failure.message); else throw failure;
    }
  });
  const sentinel = h("div", { class: "sentinel" });
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && cursor) load(false);
  }, { rootMargin: "400px" });
  observer.observe(sentinel);

  // new assets appear at once on the newest-first view
  let pending;
  queue.onChange((job, event) => {
    if (!view.contains(grid) || !["asset", "done"].includes(event.event)) return;
    if (controls.sort.value !== "time" || controls.order.value !== "desc") return;
    clearTimeout(pending);
    pending = setTimeout(() => { cursor = null; load(true); }, 400);
  });

  const filters = h("details", { class: "filter-box", open: window.matchMedia("(min-width: 901px)").matches || params.toString() !== "" },
    h("summary", {}, "Filters and sort"), form);
  clear(view, h("h1", {}, "Gallery"), filters, error, h("div", { class: "row" }, status, zip), grid, sentinel, more);
  load(true);
}
