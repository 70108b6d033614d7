// Judge and act: one asset's page. Its file, every recorded field (prompt, seed, model, knobs, timings), the score
// broken into its parts (rendered from the record, so a new part shows up by itself) with what each means, the
// best_of candidates side by side, the user's rating, and what to do next (again, remix, use as input, download,
// the equivalent CLI command and Python call; an image's edits are edit.js's).
import { ApiError, get, post, put } from "./api.js";
import { clear, copyText, fmtScore, fmtTime, h, toast } from "./dom.js";
import { editTools } from "./edit.js";
import { randomSeed } from "./make.js";

function quoteShell(text) {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

function pyLiteral(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pyLiteral).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyLiteral(v)}`).join(", ")}}`;
}

// The same output from a script: one output with this asset's own seed reproduces it alone.
export function equivalents(record, request, origin) {
  const params = { ...(request.params || {}) };
  const cli = ["aigc", "generate", record.kind, quoteShell(record.prompt)];
  if (request.backend || record.backend) cli.push("--backend", quoteShell(request.backend || record.backend));
  if (request.model) cli.push("--model", quoteShell(request.model));
  cli.push("--seed", String(record.seed));
  for (const [name, value] of Object.entries(params)) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    cli.push("-p", quoteShell(`${name}=${text}`));
  }
  cli.push("--server", quoteShell(origin));
  const args = [JSON.stringify(record.kind), JSON.stringify(record.prompt)];
  if (request.backend || record.backend) args.push(`backend=${JSON.stringify(request.backend || record.backend)}`);
  if (request.model) args.push(`model=${JSON.stringify(request.model)}`);
  args.push(`seed=${record.seed}`);
  for (const [name, value] of Object.entries(params)) args.push(`${name}=${pyLiteral(value)}`);
  const python = `import aigc\n\nteam = aigc.Client(${JSON.stringify(origin)})  # token: $AIGC_TOKEN\n` +
    `asset = team.generate(${args.join(", ")})[0]\nasset.save("out/")`;
  return { cli: cli.join(" "), python };
}

function bar(value) {
  if (typeof value === "number" && (value < 0 || value > 1)) return null; // a count, not a part in [0, 1]
  const meter = h("meter", { min: 0, max: 1, value: typeof value === "number" ? value : 0 });
  meter.setAttribute("aria-label", "score part");
  return meter;
}

// The score and every part and sub-part the record holds, each with its meaning.
export function breakdown(record, meanings) {
  const scores = record.scores || {};
  const parts = Object.keys(scores).filter((name) => !name.includes("."));
  const orphans = Object.keys(scores).filter((name) => name.includes(".") && !parts.includes(name.split(".")[0]));
  const row = (name, value, sub) => h("tr", { class: sub ? "sub" : "part", dataset: { part: name } },
    h("th", { scope: "row" }, sub ? name.split(".").slice(1).join(".") : name),
    h("td", {}, bar(value)),
    h("td", { class: "num" }, value === null || value === undefined ? "not measured"
      : Number.isInteger(value) && value > 1 ? String(value) : fmtScore(value)),
    h("td", { class: "meaning" }, meanings[name] || ""));
  const rows = [row("score", record.score, false)];
  for (const part of [...parts, ...new Set(orphans.map((n) => n.split(".")[0]))]) {
    if (parts.includes(part)) rows.push(row(part, scores[part], false));
    for (const sub of Object.keys(scores).filter((n) => n.startsWith(`${part}.`))) rows.push(row(sub, scores[sub], true));
  }
  return h("table", { class: "scores", id: "score-breakdown" },
    h("caption", {}, "Creativity score"),
    h("thead", {}, h("tr", {}, h("th", {}, "part"), h("th", {}, ""), h("th", {}, "value"), h("th", {}, "what it means"))),
    h("tbody", {}, rows));
}

function facts(meta, job) {
  const record = meta.record;
  const rows = [["prompt", record.prompt], ["kind", record.kind], ["backend", record.backend], ["model", record.model],
    ["seed", record.seed], ["made", record.created], ["owner", meta.owner], ["rank", record.rank],
    ["candidates", record.candidates], ["attempts", record.attempts], ["size", `${meta.size} bytes`]];
  const table = (title, object) => {
    const entries = Object.entries(object || {});
    if (!entries.length) return null;
    return h("table", { class: "facts" }, h("caption", {}, title),
      h("tbody", {}, entries.map(([key, value]) => h("tr", {}, h("th", { scope: "row" }, key),
        h("td", {}, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value))))));
  };
  const known = rows.filter(([, value]) => value !== null && value !== undefined);
  return [
    h("table", { class: "facts", id: "asset-facts" }, h("caption", {}, "What made it"),
      h("tbody", {}, known.map(([key, value]) => h("tr", {}, h("th", { scope: "row" }, key), h("td", {}, String(value)))),
        h("tr", {}, h("th", { scope: "row" }, "job"), h("td", {}, h("a", { href: `#/gallery?job=${job.id}` }, job.id))))),
    table("Knobs", record.params), table("Timings (s)", record.timings), table("Backend report", record.info),
    record.search ? table("Search", record.search) : null,
    record.workflow ? table("Chain step", record.workflow) : null,
  ];
}

async function media(meta) {
  if (meta.kind === "image") return h("img", { src: meta.src, alt: meta.record.prompt || "image", class: "full" });
  if (meta.kind === "audio") return h("audio", { controls: true, src: meta.src, preload: "metadata" });
  const response = await fetch(meta.src);
  return h("pre", { class: "text-asset" }, await response.text());
}

function ratingBox(id, initial) {
  const note = h("textarea", { id: "rating-note", rows: 2, maxlength: 2000, placeholder: "a note (optional)" });
  const status = h("p", { class: "hint", id: "rating-status", role: "status" });
  const up = h("button", { type: "button", id: "rate-up", class: "thumb", "aria-label": "thumbs up" }, "▲ Up");
  const down = h("button", { type: "button", id: "rate-down", class: "thumb", "aria-label": "thumbs down" }, "▼ Down");
  function show(ratings) {
    const mine = ratings.mine;
    up.setAttribute("aria-pressed", String(mine?.value === 1));
    down.setAttribute("aria-pressed", String(mine?.value === -1));
    if (mine && mine.note && document.activeElement !== note) note.value = mine.note;
    status.textContent = `${mine ? `Your rating: ${mine.value > 0 ? "up" : "down"}. ` : "Not rated by you. "}` +
      `${ratings.up} up, ${ratings.down} down in all.`;
  }
  async function rate(value) {
    const mine = up.getAttribute("aria-pressed") === "true" ? 1 : down.getAttribute("aria-pressed") === "true" ? -1 : 0;
    const chosen = mine === value ? 0 : value; // pressing it again takes it back
    status.textContent = "Saving…";
    try {
      show(await put(`/v1/assets/${id}/rating`, { value: chosen, note: note.value || null }));
    } catch (error) {
      if (error instanceof ApiError) status.textContent = error.message; else throw error;
    }
  }
  up.addEventListener("click", () => rate(1));
  down.addEventListener("click", () => rate(-1));
  show(initial);
  return h("section", { class: "rating", "aria-labelledby": "rating-title" },
    h("h2", { id: "rating-title" }, "Your judgement"),
    h("div", { class: "row" }, up, down), h("label", { for: "rating-note" }, "Note"), note, status);
}

function candidates(meta, job, siblings) {
  const list = job.progress?.candidates;
  if (!Array.isArray(list) || !list.length) return null;
  const byPosition = new Map(siblings.map((a) => [a.position, a]));
  return h("section", { class: "candidates", id: "candidates" },
    h("h2", {}, `Candidates judged (${list.length}), ${list.filter((c) => c.kept).length} kept`),
    h("div", { class: "strip" }, list.map((c) => {
      const asset = c.kept ? byPosition.get(c.position) : null;
      const parts = Object.entries(c.scores || {}).filter(([name]) => !name.includes("."));
      const thumb = asset && asset.thumbnail ? h("img", { src: asset.thumbnail, alt: "", width: 128, height: 128 })
        : asset && asset.excerpt ? h("p", { class: "excerpt" }, asset.excerpt) : null;
      const better = asset && asset.id !== meta.id
        ? h("button", { type: "button", class: "quiet", onclick: async () => {
          try { await post("/v1/ratings/prefer", { better: meta.id, worse: asset.id }); toast("Choice recorded."); }
          catch (error) { if (error instanceof ApiError) toast(error.message); else throw error; }
        } }, "this page's is better") : null;
      return h("article", { class: `candidate ${c.kept ? "kept" : "dropped"} ${asset && asset.id === meta.id ? "current" : ""}` },
        h("p", {}, h("strong", {}, c.kept ? `kept, #${(c.position ?? 0) + 1}` : "not kept"), ` · seed ${c.seed}`),
        thumb,
        h("p", { class: "score" }, `score ${fmtScore(c.score)}`),
        h("ul", {}, parts.map(([name, value]) => h("li", {}, `${name} ${fmtScore(value)}`))),
        asset ? h("a", { href: `#/asset/${asset.id}` }, asset.id === meta.id ? "this one" : "open") : null,
        better);
    })));
}

export async function renderAsset(view, id, ctx) {
  clear(view, h("p", { class: "hint" }, "Loading…"));
  let meta;
  try {
    meta = await get(`/v1/assets/${encodeURIComponent(id)}/meta`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    clear(view, h("h1", {}, "Not found"), h("p", { class: "error" }, error.message));
    return;
  }
  const [job, ratings] = await Promise.all([get(`/v1/jobs/${meta.job}`), get(`/v1/assets/${meta.id}/rating`)]);
  const siblings = job.progress?.candidates ? (await get(`/v1/assets?job=${job.id}&limit=500&order=asc`)).assets : [];
  const record = meta.record;
  const request = job.type === "generate" ? job.request : { kind: record.kind, backend: record.backend, params: {} };
  const { cli, python } = equivalents(record, request, location.origin);
  const imageBackend = Object.entries(ctx.catalog.kinds.image?.backends || {}).find(([, b]) => b.image_input);
  const act = async (body) => {
    try {
      ctx.queue.track(await post("/v1/jobs", body));
      toast("Queued again with new seeds.");
    } catch (error) { if (error instanceof ApiError) toast(error.message); else throw error; }
  };
  const actions = h("div", { class: "row actions" },
    h("button", { type: "button", id: "act-again", onclick: () => act({ ...job.request, seed: randomSeed() }) }, "Again"),
    h("button", { type: "button", id: "act-remix", onclick: () => ctx.remix({ ...request, prompt: record.prompt, seed: record.seed }) }, "Remix"),
    meta.kind === "image" ? h("button", { type: "button", id: "act-input", disabled: !imageBackend,
      title: imageBackend ? `image-to-image with ${imageBackend[0]}` : "no backend here takes an input image",
      onclick: () => ctx.remix({ kind: "image", backend: imageBackend[0], prompt: record.prompt,
        params: { [imageBackend[1].image_input]: { asset: meta.id } } }) }, "Use as input") : null,
    h("a", { class: "button", id: "act-download", href: meta.src, download: "" }, "Download"),
    h("button", { type: "button", id: "act-cli", onclick: () => copyText(cli) }, "Copy CLI"),
    h("button", { type: "button", id: "act-python", onclick: () => copyText(python) }, "Copy Python"));
  clear(view,
    h("h1", { class: "asset-title" }, record.prompt || meta.id),
    h("div", { class: "asset-page" },
      h("div", { class: "asset-main" }, await media(meta), actions,
        meta.kind === "image" ? editTools(meta, job, ctx) : null, ratingBox(meta.id, ratings),
        h("details", { class: "code" }, h("summary", {}, "The same from a script"),
          h("pre", { id: "equivalent-cli" }, cli), h("pre", { id: "equivalent-python" }, python))),
      h("div", { class: "asset-side" }, breakdown(record, ctx.meanings), facts(meta, job))),
    candidates(meta, job, siblings));
}
