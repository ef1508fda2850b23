// The web UI: hash routes to pages, the API key form, and what every page gets (its root, its signal).
//
// Each page renders into a section of its own; leaving the page aborts its signal (ending its streams and
// polls) and detaches the section, so a late answer lands nowhere. Once a page shows its data it sets
// document.body.dataset.page to its name, which is what tests wait for.

import { apiKey, onUnauthorized } from "./api.js";
import * as deployments from "./deployments.js";
import { deployForm } from "./deploy.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { modelPage, modelsPage } from "./models.js";
import { html } from "./util.js";

const ROUTES = [
  [/^#\/models$/, modelsPage, "models"],
  [/^#\/models\/(.+)$/, modelPage, "models"],
  [/^#\/jobs$/, jobsPage, "jobs"],
  [/^#\/jobs\/([^/]+)$/, jobPage, "jobs"],
  [/^#\/deploy$/, deployForm, "deploy"],
  [/^#\/deployments$/, deployments.listPage, "deployments"],
  [/^#\/deployments\/([^/]+)$/, deployments.detailPage, "deployments"],
];

const main = document.getElementById("main");
const keyForm = document.getElementById("key-form");
let current = null;

function askForKey(message) {
  keyForm.hidden = false;
  document.getElementById("key-note").textContent = message || "";
  document.getElementById("key-input").focus();
}

async function route() {
  current?.abort();
  const controller = (current = new AbortController());
  delete document.body.dataset.page;
  const [path, query = ""] = location.hash.split("?");
  const found = ROUTES.map(([pattern, page, nav]) => [path.match(pattern), page, nav]).find(([m]) => m);
  if (!found) {
    location.replace("#/models");
    return;
  }
  const [match, page, nav] = found;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  const root = document.createElement("section");
  main.replaceChildren(root);
  const ctx = {
    root,
    params: match.slice(1).map(decodeURIComponent),
    query: new URLSearchParams(query),
    signal: controller.signal,
    ready(name) {
      if (!controller.signal.aborted) document.body.dataset.page = name;
    },
  };
  try {
    await page(ctx);
  } catch (error) {
    if (controller.signal.aborted || error.name === "AbortError") return;
    root.innerHTML = html`<p class="status error" id="page-error">${error.message || error}</p>`;
    if (error.status !== 401) ctx.ready("error");
  }
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey.set(document.getElementById("key-input").value.trim());
  keyForm.hidden = true;
  route();
});
document.getElementById("key-change").addEventListener("click", () => askForKey(""));
onUnauthorized((message) => askForKey(apiKey.get() ? `That key was refused: ${message}` : "This platform needs an API key."));
window.addEventListener("hashchange", route);
route();
