// What every page shares: API calls carrying the key kept for this tab, the form that asks for it, the index
// choice and a safe way to build elements (text is always set as text, never parsed as HTML).

const KEY_STORAGE = "searcher.api-key";
let pendingKey = null; // one form at a time, however many requests were refused together

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

// The API's answer to a request, as JSON; asks for the key when the server answers 401, then tries again.
export async function api(path, { method = "GET", body } = {}) {
  for (;;) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = {};
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401) {
      await askForKey(key ? "That key was refused. Try again." : "This server asks for an API key.");
      continue;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, answer.error || `${response.status} ${response.statusText}`);
    return answer;
  }
}

function askForKey(message) {
  if (pendingKey) return pendingKey;
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const form = el(
    "form",
    { id: "key-form", class: "key-form", "aria-labelledby": "key-title" },
    el("h2", { id: "key-title" }, "Sign in with an API key"),
    el("p", {}, message, " It is kept in this browser tab only, until the tab is closed."),
    el("label", { for: "api-key" }, "API key"),
    input,
    el("button", { type: "submit" }, "Use this key"),
  );
  document.querySelector("main").prepend(form);
  input.focus();
  pendingKey = new Promise((resolve) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      form.remove();
      pendingKey = null;
      resolve();
    });
  });
  return pendingKey;
}

// Fills SELECT with the served indexes and picks WANTED (else the first); the chosen name.
export async function chooseIndex(select, wanted) {
  const { indexes } = await api("/v1/indexes");
  select.replaceChildren(
    ...indexes.map((index) => el("option", { value: index.name }, `${index.name} (${index.documents} documents)`)),
  );
  if (indexes.some((index) => index.name === wanted)) select.value = wanted;
  return select.value;
}

export function formatScore(score) {
  return score === null || score === undefined ? "–" : score.toFixed(3);
}

// The stored document ID of INDEX, as an upsert takes it back (id, title, text, fields, phrasings).
export function getDocument(index, id) {
  return api(`/v1/indexes/${encodeURIComponent(index)}/documents/${encodeURIComponent(id)}`);
}

// A link to the agent page searching TEXT on INDEX.
export function searchLink(index, text, label) {
  return el("a", { href: `/?${new URLSearchParams({ index, q: text })}` }, label);
}
