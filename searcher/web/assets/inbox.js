// The inbox: logged questions the index does not cover, grouped by meaning, each group one click from being
// added as wordings of the entry it is nearest to.
import { api, chooseIndex, el, formatScore, getDocument, searchLink } from "./common.js";

const indexSelect = document.getElementById("index");
const since = document.getElementById("since");
const status = document.getElementById("status");
const error = document.getElementById("error");
const groups = document.getElementById("groups");

async function load() {
  const index = indexSelect.value;
  status.textContent = "Grouping the logged questions…";
  error.hidden = true;
  groups.replaceChildren();
  const query = since.value ? `?since=${encodeURIComponent(since.value)}` : "";
  try {
    const report = await api(`/v1/indexes/${encodeURIComponent(index)}/inbox${query}`);
    const headings = await nearestHeadings(index, report.groups);
    groups.replaceChildren(...report.groups.map((group) => groupItem(index, group, headings)));
    status.textContent = report.groups.length
      ? `${report.groups.length} group${report.groups.length === 1 ? "" : "s"} of questions not covered by ${index}`
      : `Every logged question is covered by ${index}.`;
  } catch (failure) {
    status.textContent = "";
    error.textContent = failure.message;
    error.hidden = false;
  }
}

async function nearestHeadings(index, found) {
  const ids = [...new Set(found.map((group) => group.nearest?.id).filter(Boolean))];
  const documents = await Promise.all(ids.map((id) => getDocument(index, id).catch(() => null)));
  return new Map(ids.map((id, at) => [id, documents[at]?.title || documents[at]?.text || id]));
}

function groupItem(index, group, headings) {
  const nearest = group.nearest;
  const action = el("div", { class: "card-actions" });
  if (group.suggestion === "alternative" && nearest) {
    const note = el("span", { class: "feedback-note", role: "status" });
    const button = el("button", { type: "button", class: "primary" }, `Add as a wording of ${nearest.id}`);
    button.addEventListener("click", () => addWordings(index, nearest.id, group.queries, button, note));
    action.append(button, note);
  }
  return el(
    "li",
    { class: "card group", "data-suggestion": group.suggestion, "data-nearest": nearest?.id ?? "" },
    el(
      "h2",
      {},
      `${group.size} question${group.size === 1 ? "" : "s"}`,
      el("span", { class: `badge ${group.suggestion}` }, group.suggestion === "alternative" ? "another wording" : "new entry"),
    ),
    el("ul", {}, group.queries.map((question) => el("li", {}, searchLink(index, question, question)))),
    nearest
      ? el("p", { class: "meta" }, "Nearest entry: ", el("strong", {}, nearest.id), ` ${headings.get(nearest.id)} · score ${formatScore(nearest.score)}`)
      : el("p", { class: "meta" }, "No entry is near these questions."),
    action,
  );
}

// The entry read back whole and written with its wordings extended, so that nothing else of it changes.
async function addWordings(index, id, questions, button, note) {
  button.disabled = true;
  try {
    const entry = await getDocument(index, id);
    const added = questions.filter((question) => !entry.phrasings.includes(question));
    entry.phrasings = [...entry.phrasings, ...added];
    await api(`/v1/indexes/${encodeURIComponent(index)}/documents`, { method: "PUT", body: { documents: [entry] } });
    note.textContent = `Added ${added.length} wording${added.length === 1 ? "" : "s"} to ${id}`;
  } catch (failure) {
    button.disabled = false;
    note.textContent = `Not added: ${failure.message}`;
  }
}

document.getElementById("inbox-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
indexSelect.addEventListener("change", load);
since.addEventListener("change", load);

async function start() {
  const params = new URLSearchParams(location.search);
  try {
    await chooseIndex(indexSelect, params.get("index"));
    if (params.has("since")) since.value = params.get("since");
    await load();
  } catch (failure) {
    status.textContent = `Cannot load the indexes: ${failure.message}`;
  }
}

start();
