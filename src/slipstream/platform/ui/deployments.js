// The deployments list, and one deployment's page: its state and URL, live figures (polled every 2 s), a chat
// through the platform's proxy route (the endpoint's key never reaches the page), the spec to update, stop.

import { api } from "./api.js";
import { badge, enc, every, fail, html, note, number, when } from "./util.js";

const ENDED = ["stopped", "failed"];
const POLL_MS = 2000;

export async function listPage(ctx) {
  const { root, signal } = ctx;
  const draw = (data) => {
    root.querySelector("#deployments-table").innerHTML = data.length ? html`<table id="deployments" class="grid">
      <thead><tr><th>Name</th><th>Runtime</th><th>State</th><th>URL</th><th>Models</th><th>Created</th></tr></thead>
      <tbody>${data.map((d) => html`<tr data-deployment="${d.id}" data-state="${d.state}">
        <td><a href="#/deployments/${enc(d.id)}">${d.name || d.id}</a></td><td>${d.runtime}</td><td>${badge(d.state)}</td>
        <td><code>${d.url || ""}</code></td><td>${(d.models || []).join(", ")}</td><td>${when(d.created)}</td></tr>`)}
      </tbody></table>` : html`<p class="muted">No deployments yet: <a href="#/deploy">deploy a variant</a>.</p>`;
  };
  root.innerHTML = html`<h1>Deployments</h1><p><a class="button" href="#/deploy">New deployment</a></p>
    <div id="deployments-table"></div>`;
  draw((await api.get("deployments", { signal })).data);
  every(signal, POLL_MS, async () => draw((await api.get("deployments", { signal })).data));
  ctx.ready("deployments");
}

const FIGURES = [
  ["requests", "Requests", number], ["prompt_tokens", "Prompt tokens", number],
  ["output_tokens", "Output tokens", number], ["rejected", "Rejected", number],
  ["tokens_per_s", "Output tokens/s", (v) => number(v, 3)], ["mean_ttft_s", "Mean time to first token (ms)", (v) => number(1000 * v, 3)],
  ["mean_request_s", "Mean request (s)", (v) => number(v, 3)], ["replicas", "Replicas", number],
];

// The spec as the user edits it: the API shows how many keys there are in place of the keys themselves.
function editable(spec) {
  const { api_keys: keys, ...rest } = spec || {};
  return Array.isArray(keys) ? spec : rest;
}

export async function detailPage(ctx) {
  const { root, signal, params: [id] } = ctx;
  let d = await api.get(`deployments/${enc(id)}`, { signal });
  root.innerHTML = html`
    <h1><span id="deployment-name">${d.name || d.id}</span> <span id="deployment-state"></span></h1>
    <dl class="facts">
      <dt>URL</dt><dd><code id="deployment-url"></code></dd><dt>Runtime</dt><dd>${d.runtime}</dd>
      <dt>Models</dt><dd id="deployment-models"></dd><dt>Created</dt><dd>${when(d.created)}</dd>
      <dt>Updated</dt><dd id="deployment-updated"></dd>
    </dl>
    <p id="deployment-error" class="status error" hidden></p>
    <p class="actions"><button id="deployment-stop" type="button" class="danger">Stop</button></p>
    <h2>Figures</h2>
    <table id="deployment-figures" class="grid narrow"><tbody>
      ${FIGURES.map(([key, label]) => html`<tr><th>${label}</th><td class="num" data-figure="${key}"></td></tr>`)}
    </tbody></table>
    <p class="muted" id="figures-read"></p>
    <h2>Chat</h2>
    <div id="chat-log" class="chat" aria-live="polite"></div>
    <form id="chat-form" class="chat-form">
      <input id="chat-input" name="message" autocomplete="off" placeholder="Say something to the model" required>
      <button id="chat-send" type="submit">Send</button>
    </form>
    <p id="chat-status" class="status"></p>
    <h2>Update</h2>
    <form id="update-form">
      <p class="muted">The endpoint's keys are never shown: write <code>"api_keys": [...]</code> to set them.</p>
      <textarea id="deployment-spec" rows="14" spellcheck="false">${JSON.stringify(editable(d.spec), null, 2)}</textarea>
      <p><button id="deployment-update" type="submit">Update</button></p>
      <p id="update-status" class="status"></p>
    </form>`;
  const $ = (selector) => root.querySelector(selector);
  // the conversation so far, sent whole each time (the endpoint keeps no state between requests)
  const messages = [];
  let busy = false;

  const show = () => {
    $("#deployment-state").innerHTML = badge(d.state);
    $("#deployment-state").dataset.state = d.state;
    $("#deployment-url").textContent = d.url || "not yet";
    $("#deployment-models").textContent = (d.models || []).join(", ");
    $("#deployment-updated").textContent = when(d.updated);
    $("#deployment-error").hidden = !d.error;
    $("#deployment-error").textContent = d.error || "";
    $("#deployment-stop").disabled = ENDED.includes(d.state) || d.state === "stopping";
    $("#chat-send").disabled = d.state !== "ready" || busy;
    $("#deployment-update").disabled = ENDED.includes(d.state) || d.state === "stopping";
  };
  const showFigures = (f) => {
    for (const [key, , format] of FIGURES) {
      const v = f ? f[key] : null;
      $(`[data-figure="${key}"]`).textContent = v === null || v === undefined ? "–" : format(v);
    }
    $("#figures-read").textContent = f?.read_at ? `read ${when(f.read_at)}` : "";
  };
  const poll = async () => {
    d = await api.get(`deployments/${enc(id)}`, { signal });
    show();
    if (d.state === "ready") showFigures(await api.get(`deployments/${enc(id)}/figures`, { signal }).catch(() => null));
  };

  const drawChat = () => {
    $("#chat-log").innerHTML = html`${messages.map((m) => html`<div class="msg" data-role="${m.role}">
      <span class="who">${m.role === "user" ? "you" : "model"}</span><span class="text">${m.content}</span></div>`)}`;
    $("#chat-log").scrollTop = $("#chat-log").scrollHeight;
  };
  $("#chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("#chat-input").value.trim();
    if (!text || busy) return;
    messages.push({ role: "user", content: text });
    $("#chat-input").value = "";
    busy = true;
    show();
    drawChat();
    note($("#chat-status"), "Waiting for the model…");
    try {
      // a chat completion's default is the room left in the context: the deployment's max tokens, or a short answer
      const body = { messages, max_tokens: d.spec?.models?.[0]?.defaults?.max_tokens || 64 };
      const answer = await api.post(`deployments/${enc(id)}/chat`, body, { signal });
      const reply = answer.choices?.[0]?.message?.content ?? "";
      messages.push({ role: "assistant", content: reply });
      note($("#chat-status"), reply ? "" : `The model answered nothing (${answer.choices?.[0]?.finish_reason || "no reason given"}).`);
    } catch (error) {
      messages.pop();
      $("#chat-input").value = text;
      if (error.name !== "AbortError") fail($("#chat-status"), error);
    } finally {
      busy = false;
      show();
      drawChat();
    }
  });

  $("#update-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $("#update-status");
    try {
      const spec = JSON.parse($("#deployment-spec").value);
      d = await api.put(`deployments/${enc(id)}`, { spec }, { signal });
      note(status, "Updating: the new spec takes over once it is ready.");
      show();
    } catch (error) {
      if (error.name !== "AbortError") fail(status, error instanceof SyntaxError ? `The spec is not JSON: ${error.message}` : error);
    }
  });

  $("#deployment-stop").addEventListener("click", async () => {
    if (!confirm(`Stop ${d.name || d.id}? Its endpoint closes.`)) return;
    try {
      await api.del(`deployments/${enc(id)}`, { signal });
      await poll();
    } catch (error) {
      if (error.name !== "AbortError") fail($("#update-status"), error);
    }
  });

  show();
  showFigures(null);
  if (d.state === "ready") await poll();
  every(signal, POLL_MS, poll);
  ctx.ready("deployment");
}
