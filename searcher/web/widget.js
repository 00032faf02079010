// The help-centre widget: <script src="https://HOST/widget.js" data-index="faq" data-public-key="KEY"></script>
// puts a search box with answers where the tag is. It talks to the server the script came from, with the
// public key (search only, rate-limited), inside a shadow root so that the page's styles and its own don't mix.
(() => {
  const script = document.currentScript;
  const server = new URL(script.src).origin;
  const index = script.dataset.index;
  const publicKey = script.dataset.publicKey;
  const results = Number(script.dataset.results || 3);
  const DEBOUNCE_MS = 300;

  const STYLE = `
    :host { all: initial; display: block; font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
      color: #1b1f24; line-height: 1.5; max-width: 40rem; }
    * { box-sizing: border-box; }
    label { display: block; font-weight: 600; font-size: 0.9rem; margin-bottom: 0.3rem; }
    input { width: 100%; font: inherit; font-size: 1rem; padding: 0.6rem 0.75rem; border: 1px solid #8c959f;
      border-radius: 8px; background: #fff; color: inherit; }
    input:focus-visible { outline: 3px solid #0b5cad; outline-offset: 1px; }
    ol { list-style: none; margin: 0.75rem 0 0; padding: 0; display: grid; gap: 0.5rem; }
    li { border: 1px solid #d0d7de; border-radius: 8px; padding: 0.7rem 0.9rem; background: #fff; }
    .question { font-weight: 600; margin: 0 0 0.2rem; }
    .answer { margin: 0; }
    .message { margin: 0.6rem 0 0; color: #57606a; font-size: 0.9rem; min-height: 1.4em; }
    .message.no-match { color: #6b4400; background: #fff4d6; border: 1px solid #e3b341; border-radius: 8px; padding: 0.5rem 0.75rem; }
  `;

  const host = document.createElement("div");
  host.className = "searcher-widget";
  script.after(host);
  const root = host.attachShadow({ mode: "open" });
  const fieldId = "searcher-question";
  root.innerHTML = `<style>${STYLE}</style>
    <form role="search"><label for="${fieldId}"></label><input id="${fieldId}" type="search" autocomplete="off"></form>
    <p class="message" role="status" aria-live="polite"></p>
    <ol aria-label="Answers"></ol>`;
  const input = root.querySelector("input");
  const message = root.querySelector(".message");
  const list = root.querySelector("ol");
  root.querySelector("label").textContent = script.dataset.label || "Search our help centre";
  input.placeholder = script.dataset.placeholder || "Ask a question";

  let latest = 0;
  let timer = null;

  function say(text, noMatch = false) {
    message.textContent = text;
    message.classList.toggle("no-match", noMatch);
  }

  async function search() {
    const query = input.value.trim();
    const number = ++latest;
    if (!query) {
      list.replaceChildren();
      say("");
      return;
    }
    let response;
    try {
      response = await fetch(`${server}/v1/search`, {
        method: "POST",
        headers: { Authorization: `Bearer ${publicKey}`, "Content-Type": "application/json" },
        body: JSON.stringify({ index, query, k: results }),
      });
    } catch {
      if (number === latest) {
        list.replaceChildren();
        say("Search is not available here right now.");
      }
      return;
    }
    if (number !== latest) return;
    if (!response.ok) {
      list.replaceChildren();
      say(response.status === 429 ? "Too many searches: wait a moment and try again." : "Search is not available right now.");
      return;
    }
    const answer = await response.json();
    const good = answer.results.filter((hit) => !hit.below_threshold);
    list.replaceChildren(
      ...good.map((hit) => {
        const item = document.createElement("li");
        item.dataset.id = hit.id;
        const question = document.createElement("p");
        question.className = "question";
        question.textContent = hit.matched || hit.fields.title || hit.id;
        const body = document.createElement("p");
        body.className = "answer";
        body.textContent = hit.answer ?? hit.passage.text;
        item.append(question, body);
        return item;
      }),
    );
    if (good.length) say("");
    else say("We have no good answer to that yet. Try other words, or contact support.", true);
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, DEBOUNCE_MS);
  });
  root.querySelector("form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    search();
  });
})();
