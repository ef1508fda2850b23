// The models page (import, upload, the table of every model and variant) and one model's page.

import { api } from "./api.js";
import { watchJob } from "./job.js";
import { clip, enc, fail, flatten, html, megabytes, note, number, technique, values, when } from "./util.js";

export async function modelsPage(ctx) {
  const { root, signal } = ctx;
  root.innerHTML = html`
    <h1>Models</h1>
    <div class="cards">
      <form id="import-form" class="card">
        <h2>Import</h2>
        <label>Source <input id="import-source" name="source" required
          placeholder="a directory, a .gguf file, a hub id or a bundled name"></label>
        <label>Name <input id="import-name" name="name" placeholder="optional"></label>
        <button id="import-submit" type="submit">Import</button>
        <p id="import-status" class="status"></p>
      </form>
      <form id="upload-form" class="card">
        <h2>Upload</h2>
        <label>Name <input id="upload-name" name="name" placeholder="a .gguf file's own name unless given"></label>
        <label>Files <input id="upload-files" name="files" type="file" multiple required
          title="a .gguf file, or a model's safetensors with its config and tokenizer files"></label>
        <button id="upload-submit" type="submit">Upload</button>
        <p id="upload-status" class="status"></p>
      </form>
    </div>
    <p class="toolbar"><input id="model-filter" type="search" placeholder="Filter by name" aria-label="Filter">
      <span id="model-count" class="muted"></span></p>
    <div id="models-table"></div>`;

  const tableBox = root.querySelector("#models-table");
  const load = async () => {
    const { data } = await api.get("models", { signal });
    tableBox.innerHTML = modelsTable(data);
    root.querySelector("#model-count").textContent = `${data.length} model${data.length === 1 ? "" : "s"}`;
    filter();
  };
  const filterBox = root.querySelector("#model-filter");
  const filter = () => {
    const q = filterBox.value.trim().toLowerCase();
    for (const row of tableBox.querySelectorAll("tbody tr")) row.hidden = !!q && !row.dataset.name.toLowerCase().includes(q);
  };
  filterBox.addEventListener("input", filter);

  const started = async (job, form, status) => {
    note(status, html`Job <a href="#/jobs/${enc(job.id)}">${job.id.slice(0, 8)}</a> queued`);
    const done = await watchJob(job.id, status, signal);
    if (done?.state === "succeeded") {
      form.reset();
      note(status, html`Added <a href="#/models/${enc(done.result.variant)}">${done.result.variant}</a>`);
      await load();
    }
  };
  submitter(root.querySelector("#import-form"), "#import-status", (form) => {
    const { source, name = null } = values(form);
    return api.post("models/import", { source, name }, { signal });
  }, started);
  submitter(root.querySelector("#upload-form"), "#upload-status", (form) => {
    return api.upload("models/upload", new FormData(form), { signal });
  }, started);

  await load();
  ctx.ready("models");
}

// Runs send(form) on submit (its button disabled meanwhile), then after(answer, form, status).
function submitter(form, statusSelector, send, after) {
  const status = form.querySelector(statusSelector);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    note(status, "Sending…");
    try {
      const answer = await send(form);
      button.disabled = false;
      await after(answer, form, status);
    } catch (error) {
      if (error.name !== "AbortError") fail(status, error);
    } finally {
      button.disabled = false;
    }
  });
}

function modelsTable(models) {
  if (!models.length) return html`<p class="muted" id="models-empty">No models yet: import one above.</p>`;
  const rows = models.map((m) => html`<tr data-name="${m.name}">
    <td><a href="#/models/${enc(m.name)}">${m.name}</a></td><td>${m.format}</td><td>${technique(m.technique)}</td>
    <td class="num">${number(m.parameters)}</td><td class="num">${megabytes(m.size_bytes)}</td>
    <td>${m.parent ? html`<a href="#/models/${enc(m.parent)}">${m.parent}</a>` : ""}</td></tr>`);
  return html`<table id="models" class="grid">
    <thead><tr><th>Name</th><th>Format</th><th>Technique</th><th class="num">Parameters</th>
    <th class="num">Size (MB)</th><th>Parent</th></tr></thead><tbody>${rows}</tbody></table>`;
}

export async function modelPage(ctx) {
  const { root, signal, params: [name] } = ctx;
  const m = await api.get(`models/${enc(name)}`, { signal });
  const link = (n) => html`<a href="#/models/${enc(n)}">${n}</a>`;
  const job = (kind) => `#/jobs?kind=${kind}&model=${enc(m.name)}`;
  root.innerHTML = html`
    <h1 id="model-name">${m.name}</h1>
    <p class="actions">
      <a class="button" id="action-optimize" href="${job("optimize")}">Optimize</a>
      <a class="button" id="action-evaluate" href="${job("evaluate")}">Evaluate</a>
      <a class="button" id="action-bench" href="${job("bench")}">Bench</a>
      <a class="button" id="action-search" href="${job("search")}">Search</a>
      <a class="button" id="action-deploy" href="#/deploy?variant=${enc(m.name)}">Deploy</a>
      <button id="model-delete" type="button" class="danger">Delete</button>
    </p>
    <p id="model-status" class="status"></p>
    <dl class="facts">
      <dt>Kind</dt><dd>${m.kind}</dd><dt>Format</dt><dd>${m.format}</dd>
      <dt>Architecture</dt><dd>${m.architecture}</dd><dt>Parameters</dt><dd>${number(m.parameters)}</dd>
      <dt>Size</dt><dd>${megabytes(m.size_bytes)} MB</dd><dt>Technique</dt><dd>${technique(m.technique)}</dd>
      <dt>Created</dt><dd>${when(m.created)}</dd>
    </dl>
    <h2>Lineage</h2>
    <p id="model-lineage" class="lineage">${[m.name, ...m.lineage].map((n, i) => html`${i ? " ← " : ""}${i ? link(n) : html`<b>${n}</b>`}`)}</p>
    <h2>Variants made from it</h2>
    <ul id="model-children">${m.children.length ? m.children.map((c) => html`<li>${link(c)}</li>`) : html`<li class="muted">none</li>`}</ul>
    <h2>Figures</h2>
    <div id="model-figures">${m.results.length ? m.results.map(figures) : html`<p class="muted">No evaluation or benchmark stored yet.</p>`}</div>`;

  root.querySelector("#model-delete").addEventListener("click", async () => {
    if (!confirm(`Delete ${m.name}? Its files leave the store.`)) return;
    try {
      await api.del(`models/${enc(m.name)}`, { signal });
      location.hash = "#/models";
    } catch (error) {
      fail(root.querySelector("#model-status"), error);
    }
  });
  ctx.ready("model");
}

const SHOWN_ROWS = 80;

// One stored result as a table: what was measured (its settings, in the caption) and its figures.
function figures(result) {
  const rows = flatten(result.metrics).filter(([, v]) => v !== null && v !== "");
  const settings = flatten(result.settings).filter(([, v]) => v !== null && v !== "")
    .map(([k, v]) => `${k}=${clip(v, 40)}`).join(", ");
  return html`<table class="grid figures" data-kind="${result.kind}">
    <caption><b>${result.kind}</b> <span class="muted">${when(result.created)}</span><br>
      <small class="muted">${clip(settings, 400)}</small></caption>
    <thead><tr><th>Figure</th><th class="num">Value</th></tr></thead>
    <tbody>${rows.slice(0, SHOWN_ROWS).map(([k, v]) => html`<tr><td>${k}</td><td class="num">${clip(number(v))}</td></tr>`)}
    ${rows.length > SHOWN_ROWS ? html`<tr><td colspan="2" class="muted">and ${rows.length - SHOWN_ROWS} more</td></tr>` : ""}
    </tbody></table>`;
}
