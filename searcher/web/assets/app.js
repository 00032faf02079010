// The agent page: answers as the agent types, with scores, passages, feedback and a shareable URL.
import { api, chooseIndex, el, formatScore } from "./common.js";

const DEBOUNCE_MS = 250;
const RESULTS = 10;
const FILTER_PREFIX = "filter.";
// Fields that hold a document's own text: shown as the result, never offered as filters or chips.
const TEXT_FIELDS = ["question", "answer", "title"];

const question = document.getElementById("q");
const indexSelect = document.getElementById("index");
const modeSelect = document.getElementById("mode");
const filters = document.getElementById("filters");
const status = document.getElementById("status");
const noMatch = document.getElementById("no-match");
const results = document.getElementById("results");

let latestSearch = 0; // answers to older searches than this are stale and dropped
let debounce = null;

function setStatus(text) {
  status.textContent = text;
}

function chosenFilters() {
  const chosen = {};
  for (const select of filters.querySelectorAll("select[data-field]")) {
    if (select.value !== "") chosen[select.dataset.field] = JSON.parse(select.value);
  }
  return chosen;
}

// The page's state in its URL, so that a link opens the same search.
function rememberInUrl() {
  const params = new URLSearchParams();
  params.set("index", indexSelect.value);
  if (question.value.trim()) params.set("q", question.value);
  if (modeSelect.value !== "dense") params.set("mode", modeSelect.value);
  for (const [field, value] of Object.entries(chosenFilters())) params.set(FILTER_PREFIX + field, JSON.stringify(value));
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

async function loadFilters(index, wanted) {
  const { fields } = await api(`/v1/indexes/${encodeURIComponent(index)}/fields`);
  const shown = Object.entries(fields).filter(([name]) => !TEXT_FIELDS.includes(name));
  filters.replaceChildren(
    el("legend", {}, "Filters"),
    ...shown.map(([name, values]) => {
      const id = `filter-${name}`;
      const select = el(
        "select",
        { id, "data-field": name, onchange: scheduleSearch },
        el("option", { value: "" }, "any"),
        ...values.map((value) => el("option", { value: JSON.stringify(value) }, String(value))),
      );
      if (wanted.has(name)) select.value = wanted.get(name);
      return el("div", { class: "control" }, el("label", { for: id }, name), select);
    }),
  );
  filters.hidden = shown.length === 0;
}

function scheduleSearch() {
  clearTimeout(debounce);
  debounce = setTimeout(search, DEBOUNCE_MS);
}

async function search() {
  clearTimeout(debounce);
  rememberInUrl();
  const text = question.value.trim();
  const searchNumber = ++latestSearch;
  if (!text) {
    results.replaceChildren();
    noMatch.hidden = true;
    setStatus("Type a question to see the answers.");
    return;
  }
  setStatus("Searching…");
  const chosen = chosenFilters();
  const request = { index: indexSelect.value, query: text, k: RESULTS, mode: modeSelect.value };
  if (Object.keys(chosen).length) request.filter = chosen;
  try {
    const answer = await api("/v1/search", { method: "POST", body: request });
    if (searchNumber === latestSearch) show(answer);
  } catch (error) {
    if (searchNumber === latestSearch) {
      results.replaceChildren();
      noMatch.hidden = true;
      setStatus(`Search failed: ${error.message}`);
    }
  }
}

function show(answer) {
  const hits = answer.results;
  results.replaceChildren(...hits.map((hit) => resultItem(hit, answer)));
  const best = hits[0];
  noMatch.hidden = !(best && best.below_threshold);
  if (!noMatch.hidden) {
    noMatch.replaceChildren(
      el("strong", {}, "No good match. "),
      `The best result scores ${formatScore(best.score)}, under this index's threshold of ${formatScore(answer.threshold)}: ` +
        "it probably does not answer the question.",
    );
  }
  const count = hits.length === 1 ? "1 result" : `${hits.length} results`;
  setStatus(hits.length ? `${count} for “${answer.query}” (${answer.mode})` : `No results for “${answer.query}”`);
}

function resultItem(hit, answer) {
  const heading = hit.matched || hit.fields.title || hit.id;
  const body = hit.answer ?? hit.passage.text;
  const isPassage = hit.passage.start > 0 || hit.passage.end < hit.text.length;
  const feedbackNote = el("span", { class: "feedback-note", role: "status" });
  const vote = (helpful) => async (event) => {
    const buttons = event.currentTarget.parentElement.querySelectorAll("button.vote");
    buttons.forEach((button) => (button.disabled = true));
    try {
      await api("/v1/feedback", {
        method: "POST",
        body: { index: answer.index, query: answer.query, id: hit.id, helpful },
      });
      event.target.closest("button").classList.add("chosen");
      feedbackNote.textContent = "Feedback recorded";
    } catch (error) {
      buttons.forEach((button) => (button.disabled = false));
      feedbackNote.textContent = `Not recorded: ${error.message}`;
    }
  };
  const item = el(
    "li",
    {
      class: hit.below_threshold ? "result weak" : "result",
      tabindex: "0",
      "data-id": hit.id,
      "data-score": String(hit.score),
      "aria-label": `${hit.rank}. ${heading}, score ${formatScore(hit.score)}`,
    },
    el(
      "div",
      { class: "result-head" },
      el("h2", { class: "matched" }, heading),
      scoreBar(hit.score, answer.threshold),
    ),
    el("p", { class: "answer" }, body),
    isPassage ? el("blockquote", { class: "passage" }, el("span", { class: "label" }, "Passage: "), highlighted(hit.passage)) : null,
    el(
      "div",
      { class: "result-foot" },
      el("span", { class: "doc-id" }, hit.id),
      ...Object.entries(hit.fields)
        .filter(([name, value]) => !TEXT_FIELDS.includes(name) && typeof value !== "object")
        .map(([name, value]) => el("span", { class: "chip" }, `${name}: ${value}`)),
      el("span", { class: "spacer" }),
      el("button", { type: "button", class: "vote", onclick: vote(true) }, thumb("up"), "Helpful"),
      el("button", { type: "button", class: "vote", onclick: vote(false) }, thumb("down"), "Not helpful"),
      feedbackNote,
    ),
  );
  item.dataset.answer = body;
  return item;
}

// A thumb drawn here rather than an emoji, which not every system has a font for.
function thumb(direction) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", `thumb ${direction}`);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M1 7h3v8H1zM5 7l3-6c1.5 0 2.3 1 2 2.5L9.5 6H14c1 0 1.7.9 1.5 1.9l-1.2 5.6c-.2.9-1 1.5-1.9 1.5H5z");
  svg.append(path);
  return svg;
}

function scoreBar(score, threshold) {
  const fill = el("span", { class: "bar-fill" });
  fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
  const bar = el("span", { class: "bar", "aria-hidden": "true" }, fill);
  if (threshold !== null && threshold !== undefined) {
    const tick = el("span", { class: "bar-threshold", title: `threshold ${formatScore(threshold)}` });
    tick.style.left = `${Math.max(0, Math.min(1, threshold)) * 100}%`;
    bar.append(tick);
  }
  return el("span", { class: "score" }, bar, el("span", { class: "score-number" }, formatScore(score)));
}

// The passage's text with the words the keyword side matched marked.
function highlighted(passage) {
  const parts = [];
  let at = 0;
  for (const [start, end] of passage.highlights) {
    const from = start - passage.start;
    const to = end - passage.start;
    parts.push(passage.text.slice(at, from), el("mark", {}, passage.text.slice(from, to)));
    at = to;
  }
  parts.push(passage.text.slice(at));
  return parts;
}

async function copyAnswer(item) {
  const text = item.dataset.answer;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API outside secure contexts (a server reached over plain HTTP by name): the older way.
    const scratch = el("textarea", { class: "offscreen", "aria-hidden": "true" }, text);
    document.body.append(scratch);
    scratch.select();
    document.execCommand("copy");
    scratch.remove();
    item.focus();
  }
  setStatus(`Copied the answer of ${item.dataset.id}`);
}

function moveFocus(from, step) {
  const items = [...results.querySelectorAll("li.result")];
  const next = items[items.indexOf(from) + step];
  if (next) next.focus();
  else if (step < 0) question.focus();
}

document.addEventListener("keydown", (event) => {
  const inField = event.target.matches("input, select, textarea");
  if (event.key === "/" && !inField) {
    event.preventDefault();
    question.focus();
    question.select();
  } else if (event.target === question && event.key === "ArrowDown") {
    event.preventDefault();
    results.querySelector("li.result")?.focus();
  } else if (event.target.matches("li.result")) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      moveFocus(event.target, event.key === "ArrowDown" ? 1 : -1);
    } else if (event.key === "Enter") {
      event.preventDefault();
      copyAnswer(event.target);
    }
  }
});

document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
question.addEventListener("input", scheduleSearch);
modeSelect.addEventListener("change", search);
indexSelect.addEventListener("change", async () => {
  await loadFilters(indexSelect.value, new Map());
  search();
});

async function start() {
  const params = new URLSearchParams(location.search);
  const wantedFilters = new Map(
    [...params].filter(([name]) => name.startsWith(FILTER_PREFIX)).map(([name, value]) => [name.slice(FILTER_PREFIX.length), value]),
  );
  try {
    const index = await chooseIndex(indexSelect, params.get("index"));
    if (!index) {
      setStatus("This server serves no index.");
      return;
    }
    if (["dense", "keyword", "hybrid"].includes(params.get("mode"))) modeSelect.value = params.get("mode");
    question.value = params.get("q") ?? "";
    await loadFilters(index, wantedFilters);
    await search();
  } catch (error) {
    setStatus(`Cannot load the indexes: ${error.message}`);
  }
  question.focus();
}

start();
