// Watch: the user's jobs with their position, stage, progress and ETA, live from the server's event stream.
// A reload reads the jobs' state together with the id of the newest event it reflects (GET /v1/jobs answers
// both), then streams every event after that id; a dropped stream reconnects with Last-Event-ID.
import { ApiError, get, post, stream } from "./api.js";
import { clear, fmtDuration, h, toast } from "./dom.js";

const ACTIVE = ["pending", "running"];

export class Queue {
  constructor(list, empty) {
    this.list = list;
    this.empty = empty;
    this.jobs = new Map();
    this.viewListener = null; // the shown view's (one at a time: a new view replaces it)
    this.events = null;
  }

  onChange(listener) {
    this.viewListener = listener;
  }

  emit(job, event) {
    if (this.viewListener) this.viewListener(job, event);
  }

  async start() {
    const snapshot = await get("/v1/jobs?limit=100");
    this.jobs.clear();
    for (const job of snapshot.jobs) this.jobs.set(job.id, job);
    this.render();
    if (this.events) this.events.stop();
    this.events = stream("/v1/events", {
      after: snapshot.last_event,
      onEvent: (event) => this.apply(event),
      onState: (state) => { document.body.dataset.events = state; },
    });
  }

  track(job) {
    this.jobs.set(job.id, { ...this.jobs.get(job.id), ...job });
    this.render();
  }

  async refresh(id) {
    try {
      const job = await get(`/v1/jobs/${encodeURIComponent(id)}`);
      this.track(job);
      return job;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      return null;
    }
  }

  apply(event) {
    const data = event.data || {};
    const id = data.job;
    if (!id) return;
    const job = this.jobs.get(id);
    if (!job) { this.refresh(id).then((fresh) => fresh && this.emit(fresh, event)); return; }
    job.last_event = Number(event.id);
    switch (event.event) {
      case "queued": job.state = "pending"; job.position = data.position ?? job.position; job.error = null; break;
      case "started": case "resumed": job.state = "running"; job.position = 0; job.started = job.started || Date.now() / 1000; break;
      case "progress": job.progress = data; job.seenProgress = job.seenProgress || { at: Date.now(), step: data.step }; break;
      case "asset": case "candidate": job.made = (job.made || 0) + 1; break;
      case "done": case "failed": case "cancelled":
        job.state = event.event;
        if (data.error) job.error = data.error;
        this.refreshPositions();
        this.refresh(id);
        break;
      default: break;
    }
    this.renderOne(job);
    this.emit(job, event);
  }

  // Only the changed job's row is rebuilt, so the rest of the list stays put; a focused button in it stays focused.
  renderOne(job) {
    const row = [...this.list.children].find((li) => li.dataset.job === job.id);
    if (!row) { this.render(); return; }
    const focus = this.focused();
    row.replaceWith(this.item(job));
    this.refocus(focus);
  }

  // Which job's control has the keyboard focus (its action: cancel, retry, open), if one has.
  focused() {
    const active = document.activeElement;
    const row = active && this.list.contains(active) ? active.closest("li[data-job]") : null;
    return row ? { job: row.dataset.job, action: active.dataset.action || null } : null;
  }

  // Focus the same control of the rebuilt row; when it is gone (Cancel once the job ended), the row's next one.
  refocus(focus) {
    if (!focus) return;
    const row = this.list.querySelector(`li[data-job="${CSS.escape(focus.job)}"]`);
    if (!row) return;
    const same = focus.action && row.querySelector(`[data-action="${CSS.escape(focus.action)}"]`);
    (same || row.querySelector("button") || row.querySelector("a"))?.focus();
  }

  async refreshPositions() {
    const pending = [...this.jobs.values()].filter((job) => job.state === "pending");
    await Promise.all(pending.map((job) => this.refresh(job.id)));
  }

  render() {
    const jobs = [...this.jobs.values()].sort((a, b) => b.created - a.created);
    this.empty.hidden = jobs.length > 0;
    const focus = this.focused();
    clear(this.list, jobs.slice(0, 50).map((job) => this.item(job)));
    this.refocus(focus);
  }

  item(job) {
    const progress = job.progress || {};
    const counted = progress.total && progress.stage !== "load";  // a model loading has no steps to count
    const fraction = job.state === "done" ? 1 : counted ? Math.min(1, progress.step / progress.total) : 0;
    const what = job.type === "run" ? `chain ${job.request?.recipe || ""}` : `${job.kind || job.type}`;
    const title = job.title || what;
    const stage = job.state === "pending" ? `queued, ${job.position || 0} ahead`
      : job.state === "running" ? [progress.stage || "starting", progress.detail || "",
        progress.total > 1 ? `${progress.step}/${progress.total}` : ""].filter(Boolean).join(" ")
        : job.state;
    const actions = [];
    if (ACTIVE.includes(job.state))
      actions.push(h("button", { type: "button", class: "quiet", dataset: { action: "cancel" },
        onclick: () => this.act(job, "cancel") }, "Cancel"));
    if (["failed", "cancelled"].includes(job.state))
      actions.push(h("button", { type: "button", class: "quiet", dataset: { action: "retry" },
        onclick: () => this.act(job, "retry") }, "Retry"));
    const bar = h("progress", { max: 1, value: fraction, "aria-label": `progress of job ${job.id}` });
    if (job.state === "pending") bar.removeAttribute("value");
    return h("li", { class: `job ${job.state}`, dataset: { job: job.id, state: job.state } },
      h("div", { class: "job-head" },
        h("span", { class: `badge ${job.state}` }, job.state),
        h("a", { href: job.type === "run" ? `#/chain/${job.id}` : `#/gallery?job=${job.id}`, class: "job-title",
          dataset: { action: "open" } }, title)),
      h("div", { class: "job-meta" }, h("span", { class: "stage" }, stage), h("span", { class: "eta" }, eta(job))),
      bar,
      job.error ? h("p", { class: "error" }, job.error.message || "failed") : null,
      actions.length ? h("div", { class: "row" }, actions) : null);
  }

  async act(job, verb) {
    try {
      this.track(await post(`/v1/jobs/${encodeURIComponent(job.id)}/${verb}`));
    } catch (error) {
      if (error instanceof ApiError) toast(error.message);
      else throw error;
    }
  }
}

// Time left from the pace since this page first saw the job's progress (or since the job started).
function eta(job) {
  const progress = job.progress || {};
  if (job.state !== "running" || !progress.total || !progress.step || progress.step >= progress.total) return "";
  const seen = job.seenProgress;
  let rate = null;
  if (seen && progress.step > seen.step) rate = (progress.step - seen.step) / ((Date.now() - seen.at) / 1000);
  else if (job.started) rate = progress.step / Math.max(1, Date.now() / 1000 - job.started);
  if (!rate || rate <= 0) return "";
  return `about ${fmtDuration((progress.total - progress.step) / rate)} left`;
}
