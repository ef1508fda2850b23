// The jobs page: a form that starts any kind of job (prefilled from a model's buttons) and the jobs list.

import { api } from "./api.js";
import { FINAL_JOB, badge, enc, every, fail, html, note, percent, values, when } from "./util.js";

// GALE's quantization types per optimization type (CTranslate2's compute types; vLLM's schemes).
const QUANTIZATIONS = {
  CTranslate2: ["int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"],
  vLLM: ["AWQ", "GPTQ", "W8A8", "FP8"],
};
const KINDS = ["import", "optimize", "evaluate", "bench", "search"];
const options = (items, selected) => items.map((v) => html`<option value="${v}" ${v === selected ? "selected" : ""}>${v}</option>`);

export async function jobsPage(ctx) {
  const { root, signal, query } = ctx;
  const [{ data: models }, { data: jobs }] = await Promise.all([
    api.get("models", { signal }), api.get("jobs?limit=100", { signal })]);
  const kind = KINDS.includes(query.get("kind")) ? query.get("kind") : "optimize";
  const names = models.map((m) => m.name);
  root.innerHTML = html`
    <h1>Jobs</h1>
    <form id="job-form" class="card wide">
      <h2>Start a job</h2>
      <div class="row">
        <label>Kind <select id="job-kind" name="kind">${options(KINDS, kind)}</select></label>
        <label data-kinds="optimize evaluate bench search">Model
          <select id="job-model" name="model" required>${options(names, query.get("model"))}</select></label>
      </div>
      <fieldset data-kinds="import" class="row">
        <label>Source <input id="job-source" name="source" required placeholder="a directory, a .gguf file, a hub id or a bundled name"></label>
        <label>Name <input name="name" placeholder="optional"></label>
      </fieldset>
      <fieldset data-kinds="optimize" class="row">
        <label>Described by <select id="job-how" name="how">
          <option value="gale">GALE type and quantization</option><option value="technique">technique and options</option></select></label>
        <label data-how="gale">Optimization type <select id="job-opt-type" name="optimizationType">${options(Object.keys(QUANTIZATIONS))}</select></label>
        <label data-how="gale">Quantization type <select id="job-quant" name="quantizationType">${options(QUANTIZATIONS.CTranslate2)}</select></label>
        <label data-how="technique">Technique <input id="job-technique" name="technique" required placeholder="e.g. ctranslate2, cast, awq"></label>
        <label data-how="technique" class="grow">Options (JSON) <textarea id="job-options" name="options" rows="2" placeholder='{"quantization": "int8"}'></textarea></label>
        <label>Variant name <input id="job-name" name="name" placeholder="optional"></label>
      </fieldset>
      <fieldset data-kinds="evaluate" class="row">
        <label>Tokens <input name="max_tokens" type="number" min="64" step="1" value="8192"></label>
      </fieldset>
      <fieldset data-kinds="bench" class="row">
        <label>Threads <input name="threads" type="number" min="1" step="1" value="1"></label>
        <label>Batch sizes <input name="batch_sizes" value="1" pattern="[0-9, ]+" title="numbers, separated by commas"></label>
      </fieldset>
      <fieldset data-kinds="search" class="row">
        <label>Gate metric <select name="metric"><option>perplexity</option></select></label>
        <label>Max drop <input name="max_drop" value="1%" required></label>
        <label>Objective <select name="objective">${options(["latency", "throughput", "size", "cost"])}</select></label>
        <label>Budget <input name="budget" value="30m" required></label>
      </fieldset>
      <button id="job-submit" type="submit">Start</button>
      <p id="job-form-status" class="status"></p>
    </form>
    <h2>Recent jobs</h2>
    <div id="jobs-table">${jobsTable(jobs)}</div>`;

  const form = root.querySelector("#job-form");
  const $ = (selector) => form.querySelector(selector);
  const arrange = () => {
    const k = $("#job-kind").value, how = $("#job-how").value;
    // a hidden, disabled control is neither validated nor sent
    for (const el of form.querySelectorAll("[data-kinds]")) {
      el.hidden = !el.dataset.kinds.split(" ").includes(k);
      el.querySelectorAll("input, select, textarea").forEach((c) => { c.disabled = el.hidden; });
    }
    for (const el of form.querySelectorAll("[data-how]")) {
      const off = k !== "optimize" || el.dataset.how !== how;
      el.hidden = off;
      el.querySelectorAll("input, select, textarea").forEach((c) => { c.disabled = off; });
    }
  };
  $("#job-kind").addEventListener("change", arrange);
  $("#job-how").addEventListener("change", arrange);
  $("#job-opt-type").addEventListener("change", () => {
    $("#job-quant").innerHTML = options(QUANTIZATIONS[$("#job-opt-type").value]);
  });
  arrange();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $("#job-form-status");
    try {
      const v = values(form);
      const job = await api.post("jobs", { kind: v.kind, spec: spec(v) }, { signal });
      location.hash = `#/jobs/${enc(job.id)}`;
    } catch (error) {
      if (error.name !== "AbortError") fail(status, error);
    }
  });

  every(signal, 3000, async () => {
    const { data } = await api.get("jobs?limit=100", { signal });
    root.querySelector("#jobs-table").innerHTML = jobsTable(data);
  });
  note($("#job-form-status"), names.length ? "" : "No models yet: import one first (kind import).");
  ctx.ready("jobs");
}

// The job's spec from the form's values (empty fields left to the server's defaults).
function spec(v) {
  const { kind, how, ...rest } = v;
  if (kind === "optimize" && how === "technique") {
    let opts = {};
    if (rest.options) {
      try {
        opts = JSON.parse(rest.options);
      } catch (error) {
        throw new Error(`Options are not JSON: ${error.message}`);
      }
    }
    return { ...rest, options: opts };
  }
  if (kind === "evaluate") return { ...rest, max_tokens: Number(rest.max_tokens) };
  if (kind === "bench") {
    const sizes = (rest.batch_sizes || "1").split(",").map((s) => Number(s.trim())).filter(Boolean);
    return { ...rest, threads: Number(rest.threads || 1), batch_sizes: sizes };
  }
  return rest;
}

function jobsTable(jobs) {
  if (!jobs.length) return html`<p class="muted">No jobs yet.</p>`;
  const rows = jobs.map((j) => {
    const p = j.progress;
    const shown = FINAL_JOB.includes(j.state) || !p ? "" : `${p.stage || ""} ${p.fraction != null ? percent(p.fraction) : ""}`;
    return html`<tr data-job="${j.id}" data-state="${j.state}">
      <td><a href="#/jobs/${enc(j.id)}"><code>${j.id.slice(0, 8)}</code></a></td><td>${j.kind}</td>
      <td>${j.spec.model || j.spec.source || j.spec.name || ""}</td><td>${badge(j.state)}</td><td>${shown}</td>
      <td>${when(j.created)}</td></tr>`;
  });
  return html`<table id="jobs" class="grid"><thead><tr><th>Job</th><th>Kind</th><th>Model</th><th>State</th>
    <th>Progress</th><th>Created</th></tr></thead><tbody>${rows}</tbody></table>`;
}
