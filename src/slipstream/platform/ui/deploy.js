// The deploy form: one variant behind an endpoint, its sampling defaults and its scaling, as slipstream's own
// deployment spec (slipstream/deploy/spec.py), shown as it will be sent.

import { api } from "./api.js";
import { enc, fail, html, raw, values } from "./util.js";

// The spec's default max_tokens limit (SamplingLimits.max_tokens): a larger default raises the limit too.
const MAX_TOKENS_LIMIT = 1024;

const field = (label, name, attrs, hint) => html`<label>${label}
  <input id="deploy-${name.replace(/_/g, "-")}" name="${name}" type="number" ${raw(attrs)} placeholder="${hint}"></label>`;

export async function deployForm(ctx) {
  const { root, signal, query } = ctx;
  const { data: models } = await api.get("models", { signal });
  const chosen = query.get("variant");
  root.innerHTML = html`
    <h1>Deploy</h1>
    <form id="deploy-form" class="card wide">
      <div class="row">
        <label>Variant <select id="deploy-variant" name="variant" required>
          ${models.map((m) => html`<option value="${m.name}" ${m.name === chosen ? "selected" : ""}>${m.name}</option>`)}
        </select></label>
        <label>Served name <input id="deploy-name" name="name" placeholder="the variant's name"></label>
        <label>Runtime <select id="deploy-runtime" name="runtime">
          <option value="process" selected>process</option><option value="ray">ray</option></select></label>
      </div>
      <fieldset class="row"><legend>Hyperparameters (empty: the server's defaults)</legend>
        ${field("Temperature", "temperature", 'min="0" max="2" step="0.05"', "1.0")}
        ${field("Max tokens", "max_tokens", 'min="1" max="32768" step="1"', "16")}
        ${field("Top p", "top_p", 'min="0.01" max="1" step="0.01"', "1.0")}
        ${field("Top k", "top_k", 'min="1" max="100" step="1"', "off")}
        <label>Stop sequence <input id="deploy-stop" name="stop" placeholder="none"></label>
      </fieldset>
      <fieldset class="row"><legend>Scaling and batching (empty: one replica per core)</legend>
        ${field("Min replicas", "min_replicas", 'min="0" max="10" step="1"', "1")}
        ${field("Max replicas", "max_replicas", 'min="1" max="50" step="1"', "1")}
        ${field("Max batch size", "max_batch_size", 'min="1" max="256" step="1"', "16")}
        ${field("Target ongoing requests", "target_ongoing_requests", 'min="0.1" step="0.1"', "2")}
        ${field("Upscale delay (s)", "upscale_delay_s", 'min="0" step="1"', "30")}
        ${field("Downscale delay (s)", "downscale_delay_s", 'min="0" step="1"', "600")}
      </fieldset>
      <details><summary>Spec</summary><pre id="deploy-spec"></pre></details>
      <button id="deploy-submit" type="submit" ${models.length ? "" : "disabled"}>Deploy</button>
      <p id="deploy-status" class="status">${models.length ? "" : "No models yet: import one first."}</p>
    </form>`;

  const form = root.querySelector("#deploy-form");
  const preview = () => {
    root.querySelector("#deploy-spec").textContent = JSON.stringify(deploySpec(values(form)), null, 2);
  };
  form.addEventListener("input", preview);
  preview();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = root.querySelector("#deploy-submit");
    button.disabled = true;
    try {
      const v = values(form);
      const deployment = await api.post("deployments", { spec: deploySpec(v), runtime: v.runtime || "process" }, { signal });
      location.hash = `#/deployments/${enc(deployment.id)}`;
    } catch (error) {
      if (error.name !== "AbortError") fail(root.querySelector("#deploy-status"), error);
    } finally {
      button.disabled = false;
    }
  });
  ctx.ready("deploy");
}

const SAMPLING = ["temperature", "max_tokens", "top_p", "top_k"];
const SCALING = ["min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s"];

export function deploySpec(v) {
  const model = { name: v.name || v.variant || "", variant: v.variant || "" };
  const defaults = {};
  for (const k of SAMPLING) if (v[k] !== undefined) defaults[k] = Number(v[k]);
  if (v.stop) defaults.stop = [v.stop];
  if (Object.keys(defaults).length) model.defaults = defaults;
  if (defaults.max_tokens > MAX_TOKENS_LIMIT) model.limits = { max_tokens: defaults.max_tokens };
  if (v.max_batch_size !== undefined) model.max_batch_size = Number(v.max_batch_size);
  const scaling = {};
  for (const k of SCALING) if (v[k] !== undefined) scaling[k] = Number(v[k]);
  if (scaling.min_replicas !== undefined && scaling.max_replicas === undefined) {
    scaling.max_replicas = Math.max(1, scaling.min_replicas);
  }
  if (Object.keys(scaling).length) model.scaling = scaling;
  return { host: "127.0.0.1", port: 0, api_keys: [], models: [model] };
}
