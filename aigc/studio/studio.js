// The studio's entry: the token (asked for when the server wants one, kept in this tab's sessionStorage only),
// the catalog of backends, the queue panel, and hash routes for the views.
import { ApiError, get, setToken, token } from "./api.js";
import { renderAsset } from "./asset.js";
import { renderChain, renderChains } from "./chain.js";
import { clear, h } from "./dom.js";
import { renderGallery } from "./gallery.js";
import { renderMake } from "./make.js";
import { Queue } from "./queue.js";

const view = document.getElementById("view");
const queue = new Queue(document.getElementById("queue-list"), document.getElementById("queue-empty"));
const ctx = { catalog: null, meanings: {}, queue, prefill: null, remix: null };
let booted = false;

function askForToken(message = "") {
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-error").textContent = message;
  document.getElementById("token-button").hidden = false;
  if (!dialog.open) dialog.showModal();
  document.getElementById("token-input").focus();
}

async function boot() {
  try {
    ctx.catalog = await get("/v1/backends");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      askForToken(token() ? "That token was refused; check it with your admin." : "");
      return;
    }
    clear(view, h("h1", {}, "The server did not answer"), h("p", { class: "error" }, error.message));
    return;
  }
  if (token()) document.getElementById("token-button").hidden = false;
  ctx.meanings = (await get("/v1/scoring")).meanings;
  await queue.start();
  if (!booted) window.addEventListener("hashchange", route);
  booted = true;
  await route();
}

ctx.remix = (prefill) => {
  ctx.prefill = prefill;
  if (location.hash === "#/make") route(); else location.hash = "#/make";
};

async function route() {
  const [path, query] = (location.hash.slice(1) || "/make").split("?");
  const parts = path.split("/").filter(Boolean);
  const name = parts[0] || "make";
  document.querySelectorAll("nav a").forEach((link) => {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  });
  queue.onChange(null);
  document.body.dataset.view = name;
  try {
    if (name === "gallery") renderGallery(view, new URLSearchParams(query || ""), queue);
    else if (name === "asset" && parts[1]) await renderAsset(view, parts[1], ctx);
    else if (name === "chain" && parts[1]) await renderChain(view, parts[1], queue);
    else if (name === "chain") await renderChains(view, ctx.catalog, queue);
    else {
      renderMake(view, ctx.catalog, queue, ctx.prefill || {});
      ctx.prefill = null;
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    clear(view, h("h1", {}, "Something went wrong"), h("p", { class: "error" }, error.message));
  }
}

document.getElementById("token-form").addEventListener("submit", () => {
  setToken(document.getElementById("token-input").value.trim());
  document.getElementById("token-input").value = "";
  boot();
});
document.getElementById("token-button").addEventListener("click", () => askForToken());
let asking = false;
window.addEventListener("aigc:token-needed", () => {
  if (asking) return;
  asking = true;
  setTimeout(() => { asking = false; }, 2000);
  askForToken("The server asks for a token again.");
});

// back to this page from the browser's back/forward cache: its event stream ended when it was left (api.js)
window.addEventListener("pageshow", (event) => { if (event.persisted && booted) queue.start(); });

boot();
