// Small helpers every page uses: HTML built from escaped text, number formats, waiting.

class Raw {
  constructor(text) { this.text = text; }
  toString() { return this.text; }
}

// Markup that html`` inserts as it is (only for strings this code wrote itself).
export const raw = (text) => new Raw(text);

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function show(value) {
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return value.map(show).join("");
  if (value === null || value === undefined || value === false) return "";
  return esc(value);
}

// A tagged template whose values are escaped (names, messages and specs come from users); arrays are joined,
// so a table of a thousand rows is one string and one innerHTML.
export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((v, i) => { out += show(v) + strings[i + 1]; });
  return raw(out);
}

export const enc = encodeURIComponent;

export function number(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return Number(value.toPrecision(digits)).toString();
}

export const megabytes = (bytes) => (bytes === null || bytes === undefined ? "" : (bytes / 1e6).toFixed(1));

export const percent = (fraction) => `${(100 * fraction).toFixed(fraction && Math.abs(fraction) < 0.1 ? 2 : 1)}%`;

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function technique(t) {
  if (!t) return "";
  const { technique: name, ...options } = t;
  const shown = Object.entries(options).filter(([, v]) => v !== null && v !== undefined && v !== false);
  return [name, ...shown.map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)].join(" ");
}

// Leaves of a nested object as [dotted key, value] rows; lists of plain values stay one row.
export function flatten(value, prefix = "", out = []) {
  if (value !== null && typeof value === "object") {
    if (Array.isArray(value) && value.every((v) => v === null || typeof v !== "object")) {
      out.push([prefix, value.join(", ")]);
      return out;
    }
    for (const [k, v] of Object.entries(value)) {
      const key = Array.isArray(value) ? `${prefix}[${k}]` : prefix ? `${prefix}.${k}` : k;
      flatten(v, key, out);
    }
    return out;
  }
  out.push([prefix, value]);
  return out;
}

export function clip(text, length = 160) {
  const s = String(text ?? "");
  return s.length > length ? `${s.slice(0, length)}…` : s;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// Calls fn every ms (never two at once) until the page is left.
export function every(signal, ms, fn) {
  (async () => {
    while (!signal.aborted) {
      await sleep(ms, signal);
      if (signal.aborted) return;
      try {
        if ((await fn()) === false) return;
      } catch (error) {
        if (!signal.aborted) console.warn(error);
      }
    }
  })();
}

export const FINAL_JOB = ["succeeded", "failed", "cancelled"];

export const badge = (state) => html`<span class="state" data-state="${state}">${state}</span>`;

// Shows an error's message in a form's status line.
export function fail(element, error) {
  element.className = "status error";
  element.textContent = error.message || String(error);
}

export function note(element, content) {
  element.className = "status";
  if (content instanceof Raw) element.innerHTML = content.text;
  else element.textContent = content;
}

// The form's named values, empty ones left out.
export function values(form) {
  const out = {};
  for (const [k, v] of new FormData(form)) if (typeof v === "string" && v.trim() !== "") out[k] = v.trim();
  return out;
}
