// One job's page: its state, live progress from the job's server-sent events, its log, its result, cancel;
// a search's result as a Pareto plot. Also watchJob, the one-line progress the models page shows.

import { api, streamEvents } from "./api.js";
import { paretoPlot, recordsTable } from "./pareto.js";
import { FINAL_JOB, badge, enc, every, fail, html, note, percent, sleep, when } from "./util.js";

const LOG_LINES = 200;

function progressText(p) {
  if (!p) return "";
  return `${p.stage || ""}${p.fraction !== null && p.fraction !== undefined ? ` ${percent(p.fraction)}` : ""}`;
}

// Polls a job until it ends, its state and progress in `status`; the job as it ended (or null if left).
export async function watchJob(id, status, signal) {
  for (;;) {
    const job = await api.get(`jobs/${enc(id)}`, { signal });
    if (FINAL_JOB.includes(job.state)) {
      if (job.state !== "succeeded") fail(status, `${job.state}: ${job.error || "see the job's log"}`);
      return job;
    }
    note(status, html`<a href="#/jobs/${enc(id)}">${job.kind} job</a> ${job.state} ${progressText(job.progress)}`);
    await sleep(1000, signal);
    if (signal.aborted) return null;
  }
}

export async function jobPage(ctx) {
  const { root, signal, params: [id] } = ctx;
  let job = await api.get(`jobs/${enc(id)}`, { signal });
  root.innerHTML = html`
    <h1>${job.kind} job <code>${job.id.slice(0, 8)}</code> <span id="job-state"></span></h1>
    <p class="muted">${subject(job)} · created ${when(job.created)}</p>
    <div id="job-progress" class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100">
      <div class="bar"></div><span class="label"></span></div>
    <p class="actions"><button id="job-cancel" type="button" class="danger">Cancel</button></p>
    <p id="job-error" class="status error" hidden></p>
    <section id="job-result"></section>
    <h2>Events</h2>
    <ol id="job-events" class="log events"></ol>
    <h2>Log</h2>
    <pre id="job-log" class="log"></pre>
    <details><summary>Spec</summary><pre id="job-spec">${JSON.stringify(job.spec, null, 2)}</pre></details>`;
  const $ = (selector) => root.querySelector(selector);

  const show = () => {
    $("#job-state").innerHTML = badge(job.state);
    $("#job-state").dataset.state = job.state;
    showProgress($("#job-progress"), job);
    $("#job-cancel").hidden = FINAL_JOB.includes(job.state);
    $("#job-error").hidden = !job.error;
    $("#job-error").textContent = job.error || "";
    $("#job-result").innerHTML = result(job);
  };
  const refreshLog = async () => {
    const text = await api.text(`jobs/${enc(id)}/log`, { signal });
    const box = $("#job-log");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = text.split("\n").slice(-LOG_LINES).join("\n");
    if (atEnd) box.scrollTop = box.scrollHeight;
  };

  $("#job-cancel").addEventListener("click", async () => {
    try {
      job = await api.post(`jobs/${enc(id)}/cancel`, undefined, { signal });
      show();
    } catch (error) {
      fail($("#job-error"), error);
      $("#job-error").hidden = false;
    }
  });

  let stage = null;
  const addEvent = (event) => {
    const line = eventLine(event, stage);
    if (event.type === "progress") stage = event.stage;
    if (!line) return;
    const box = $("#job-events");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.insertAdjacentHTML("beforeend", html`<li data-type="${event.type}"><time>${clock(event.created)}</time> ${line}</li>`.text);
    while (box.children.length > LOG_LINES) box.firstElementChild.remove();
    if (atEnd) box.scrollTop = box.scrollHeight;
  };

  show();
  await refreshLog();
  ctx.ready("job");
  const ended = FINAL_JOB.includes(job.state);
  if (!ended) {
    every(signal, 2000, async () => {
      await refreshLog();
      return !FINAL_JOB.includes(job.state);
    });
  }
  // a job that has ended still gives its events, then the end
  await follow(id, signal, (event) => {
    addEvent(event);
    if (ended) return;
    if (event.type === "progress") job.progress = event;
    else if (event.type === "state") job.state = event.state;
    show();
  });
  if (signal.aborted || ended) return;
  job = await api.get(`jobs/${enc(id)}`, { signal });
  show();
  await refreshLog();
}

const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

// One line per state change, stage, log message or requeue (progress within a stage moves only the bar).
function eventLine(event, stage) {
  if (event.type === "state") return html`state <b>${event.state}</b>${event.error ? `: ${event.error}` : ""}`;
  if (event.type === "progress") return event.stage && event.stage !== stage ? html`${event.stage}` : null;
  if (event.type === "log") return html`${event.message}`;
  if (event.type === "requeued") return html`requeued: ${event.reason}`;
  return html`${event.type}`;
}

// The job's events until it ends; a dropped stream resumes after the last event seen.
async function follow(id, signal, onEvent) {
  let after = 0;
  while (!signal.aborted) {
    try {
      const ended = await streamEvents(`jobs/${enc(id)}/events?after=${after}`, (frame) => {
        if (frame.id) after = Number(frame.id);
        onEvent(JSON.parse(frame.data));
      }, signal);
      if (ended) return;
    } catch (error) {
      if (signal.aborted || error.status === 404) return;
    }
    await sleep(2000, signal);
  }
}

function showProgress(box, job) {
  const p = job.progress;
  let fraction = p && p.fraction !== null && p.fraction !== undefined ? p.fraction : null;
  if (job.state === "succeeded") fraction = 1;
  box.classList.toggle("unknown", fraction === null && job.state === "running");
  box.dataset.state = job.state;
  box.querySelector(".bar").style.width = `${Math.round(100 * (fraction ?? 0))}%`;
  box.setAttribute("aria-valuenow", String(Math.round(100 * (fraction ?? 0))));
  const label = job.state === "running" ? progressText(p) || "running" : job.state;
  box.querySelector(".label").textContent = label;
}

function subject(job) {
  const s = job.spec || {};
  return s.model || s.source || s.name || "";
}

function result(job) {
  const r = job.result;
  if (job.kind === "search" && r && Array.isArray(r.records)) {
    return html`<h2>Candidates</h2>${paretoPlot(r)}${recordsTable(r)}`;
  }
  if (!r) return job.kind === "search" && job.state === "running" ? html`<p class="muted">The plot comes when the search ends.</p>` : "";
  const variant = r.variant;
  return html`<h2>Result</h2>
    ${variant ? html`<p>Variant <a id="job-variant" href="#/models/${enc(variant)}">${variant}</a>
      · <a href="#/deploy?variant=${enc(variant)}">deploy it</a></p>` : ""}
    <details ${variant ? "" : "open"}><summary>As JSON</summary><pre id="job-result-json">${JSON.stringify(r, null, 2)}</pre></details>`;
}
