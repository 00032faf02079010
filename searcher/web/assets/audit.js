// The audit: entries the model confuses, entries their own question misses, entries never found.
import { api, chooseIndex, el, formatScore, getDocument, searchLink } from "./common.js";

const SHOWN_HEADINGS = 60; // entries whose heading is fetched to show beside their id

const indexSelect = document.getElementById("index");
const status = document.getElementById("status");
const error = document.getElementById("error");
const report = document.getElementById("report");

async function load() {
  const index = indexSelect.value;
  status.textContent = "Auditing the entries…";
  error.hidden = true;
  report.hidden = true;
  try {
    const audit = await api(`/v1/indexes/${encodeURIComponent(index)}/audit`);
    const shown = [...new Set([...audit.confusable.flatMap((pair) => [pair.a, pair.b]), ...audit.not_self_retrieved])];
    const headings = await headingsOf(index, shown.slice(0, SHOWN_HEADINGS));
    const entry = (id) => el("td", {}, el("strong", {}, id), el("div", { class: "meta" }, headings.get(id) ?? ""));
    fill("confusable", audit.confusable, (pair) => el("tr", {}, entry(pair.a), entry(pair.b), el("td", {}, formatScore(pair.score))), () =>
      el("tr", {}, el("td", { colspan: "3", class: "meta" }, "None.")),
    );
    fill("not-self-retrieved", audit.not_self_retrieved, (id) => el("li", {}, searchLink(index, headings.get(id) ?? id, id)));
    fill("never-matched", audit.never_matched, (id) => el("li", {}, el("code", {}, id)));
    status.textContent =
      `${audit.confusable.length} confusable pairs, ${audit.not_self_retrieved.length} entries not found by their own question, ` +
      `${audit.never_matched.length} never matched`;
    report.hidden = false;
  } catch (failure) {
    status.textContent = "";
    error.textContent = failure.message;
    error.hidden = false;
  }
}

function fill(id, items, render, none = () => el("li", { class: "meta" }, "None.")) {
  document.getElementById(id).replaceChildren(...(items.length ? items.map(render) : [none()]));
}

async function headingsOf(index, ids) {
  const documents = await Promise.all(ids.map((id) => getDocument(index, id).catch(() => null)));
  return new Map(ids.map((id, at) => [id, documents[at]?.title ?? ""]));
}

document.getElementById("audit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
indexSelect.addEventListener("change", load);

async function start() {
  try {
    await chooseIndex(indexSelect, new URLSearchParams(location.search).get("index"));
    await load();
  } catch (failure) {
    status.textContent = `Cannot load the indexes: ${failure.message}`;
  }
}

start();
