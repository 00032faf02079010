"""The pages for agents and the help centre in a real browser (the system's Chromium through Playwright),
against a real `searcher serve` process over the example FAQ on the bundled model."""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from test_server import free_port, wait_serving

from searcher import Index
from searcher.sources import read_records

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium)", allow_module_level=True)
expect = playwright_api.expect

pytestmark = pytest.mark.slow
FAQ = Path(__file__).parent.parent / "examples" / "faq.jsonl"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY, PUBLIC_KEY = "agent-key", "widget-key"
THRESHOLD = 0.5  # dense: "I forgot my password" scores 0.69 on its entry, an off-topic question under 0.3
NOT_COVERED = 0.45
UNCOVERED_QUESTIONS = ["Can I pay with bitcoin?", "Do you accept cryptocurrency?", "pay using crypto coins"]
WIDGET_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Help centre</title>
<link rel="icon" href="data:,"><style>input {{ border: 5px solid red }} li {{ color: red }}</style></head>
<body><h1>Help</h1><script src="{server}/widget.js" data-index="faq" data-public-key="{key}"></script></body></html>"""


@pytest.fixture(scope="module")
def home(tmp_path_factory, bundled_embedder) -> Path:
    """The example FAQ on the bundled model, calibrated, logging its questions, a few of them uncovered."""
    home = tmp_path_factory.mktemp("web-home")
    with Index.create(home / "faq", embedder=bundled_embedder) as index:
        index.add(read_records(FAQ))
        index.set_threshold("dense", THRESHOLD, {"precision": 0.9, "not_covered": NOT_COVERED})
        index.set_logging(True)
        index.search_many(UNCOVERED_QUESTIONS, k=3, log=True)
    return home


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def help_centres(tmp_path_factory):
    """Two web sites serving the same page with the widget: (allowed origin, refused origin)."""
    site = tmp_path_factory.mktemp("help-centre")
    ports = [free_port(), free_port()]
    handler = functools.partial(QuietHandler, directory=str(site))
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) for port in ports]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, [f"http://127.0.0.1:{port}" for port in ports]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server(home, help_centres):
    """The base URL of `searcher serve` with the API key, the public key and CORS for the first help centre."""
    site, (allowed, _) = help_centres
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (site / "index.html").write_text(WIDGET_PAGE.format(server=url, key=PUBLIC_KEY))
    environment = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "FULL_KEY": API_KEY,
        "PUBLIC_KEY": PUBLIC_KEY,
        "SEARCHER_HOME": str(home),
    }
    command = [sys.executable, "-m", "searcher", "serve", "--index", "faq", "--home", str(home), "--port", str(port)]
    command += ["--api-key-env", "FULL_KEY", "--public-key-env", "PUBLIC_KEY", "--cors-origin", allowed]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_serving(process, url, timeout=60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Problems:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page) -> None:
        self.messages: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.messages.append(message.text))
        page.on("pageerror", lambda error: self.messages.append(f"uncaught: {error}"))


@pytest.fixture
def page(browser, server):
    """A page of a new browser context whose tab already holds the API key for the server."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    remember_key = f"sessionStorage.setItem('searcher.api-key', {json.dumps(API_KEY)})"
    context.add_init_script(f"if (location.origin === {json.dumps(server)}) {remember_key}")
    page = context.new_page()
    page.problems = Problems(page)
    yield page
    context.close()


def first_result(page):
    return page.locator("#results li.result").first


def test_typing_a_question_shows_its_answer_first(page, server):
    page.goto(server)
    page.locator("#q").press_sequentially("I forgot my password", delay=20)
    expect(first_result(page)).to_have_attribute("data-id", "faq-002")
    assert float(first_result(page).get_attribute("data-score")) > THRESHOLD
    expect(page.locator("#no-match")).to_be_hidden()
    assert "q=I+forgot+my+password" in page.url and "index=faq" in page.url
    assert page.problems.messages == []


def test_a_question_under_the_threshold_says_no_good_match(page, server):
    page.goto(server)
    page.locator("#q").fill("What is the boiling point of mercury?")
    expect(page.locator("#no-match")).to_be_visible()
    expect(page.locator("#no-match")).to_contain_text("No good match")
    assert float(first_result(page).get_attribute("data-score")) < THRESHOLD


def test_a_filter_narrows_the_results(page, server):
    page.goto(f"{server}/?index=faq&q=how+do+I+pay")
    expect(first_result(page)).to_be_visible()
    page.locator('#filters select[data-field="category"]').select_option(label="billing")
    results = page.locator("#results li.result")
    expect(results.filter(has_not_text="category: billing")).to_have_count(0)
    assert results.count() > 0
    assert "filter.category" in page.url


def test_one_feedback_click_sends_one_request_that_is_recorded(page, server, home, tmp_path):
    feedback_requests = []
    page.on("request", lambda request: "/v1/feedback" in request.url and feedback_requests.append(request))
    page.goto(f"{server}/?index=faq&q=how+do+I+export+my+notes")
    expect(first_result(page)).to_have_attribute("data-id", "faq-043")
    first_result(page).get_by_role("button", name="Helpful", exact=True).click()
    expect(first_result(page).locator(".feedback-note")).to_have_text("Feedback recorded")
    assert len(feedback_requests) == 1
    assert json.loads(feedback_requests[0].post_data) == {
        "index": "faq",
        "query": "how do I export my notes",
        "id": "faq-043",
        "helpful": True,
    }
    exported = tmp_path / "pairs.jsonl"
    command = [sys.executable, "-m", "searcher", "feedback", "faq", "--export", str(exported), "--home", str(home)]
    subprocess.run(command, check=True, capture_output=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    pairs = [json.loads(line) for line in exported.read_text().splitlines()]
    assert {"query": "how do I export my notes", "id": "faq-043"} in pairs


def test_a_link_opens_with_its_search_done(page, server):
    page.goto(f"{server}/?index=faq&q=How+do+I+export+my+notes&mode=hybrid")
    expect(first_result(page)).to_have_attribute("data-id", "faq-043")
    expect(page.locator("#q")).to_have_value("How do I export my notes")
    expect(page.locator("#mode")).to_have_value("hybrid")
    assert page.problems.messages == []


def test_keyboard_moves_between_results_and_copies_an_answer(page, server):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    page.goto(f"{server}/?index=faq&q=reset+password")
    expect(first_result(page)).to_have_attribute("data-id", "faq-002")
    page.locator("body").click(position={"x": 5, "y": 700})
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(first_result(page)).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#results li.result").nth(1)).to_be_focused()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").startswith("On the sign-in screen")


def test_the_page_asks_for_the_key_once(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server}/?index=faq&q=reset+password")
    page.get_by_role("textbox", name="API key").fill(API_KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(first_result(page)).to_have_attribute("data-id", "faq-002")
    page.reload()
    expect(first_result(page)).to_have_attribute("data-id", "faq-002")
    expect(page.locator("#key-form")).to_have_count(0)  # kept in the tab's sessionStorage
    context.close()


@pytest.mark.parametrize("path", ["/", "/inbox", "/audit"])
def test_pages_render_without_console_errors(page, server, path):
    page.goto(server + path)
    expect(page.locator("#status")).not_to_have_text(re.compile(r"Loading|Searching|Grouping|Auditing|^$"))
    assert page.problems.messages == []


def test_the_inbox_adds_a_group_as_wordings_of_its_nearest_entry(page, server):
    page.goto(f"{server}/inbox?since=")
    group = page.locator('li.group[data-suggestion="alternative"]').first
    expect(group).to_contain_text("Can I pay with bitcoin?")
    entry = group.get_attribute("data-nearest")
    questions = group.locator("ul li").all_inner_texts()
    group.get_by_role("button", name=f"Add as a wording of {entry}").click()
    expect(group.locator(".feedback-note")).to_have_text(f"Added {len(questions)} wordings to {entry}")
    stored = httpx.get(f"{server}/v1/indexes/faq/documents/{entry}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert stored.json()["phrasings"][-len(questions) :] == questions
    assert stored.json()["title"] and stored.json()["fields"]["answer"]  # the rest of the entry kept


def test_the_audit_lists_its_findings(page, server):
    page.goto(f"{server}/audit")
    expect(page.locator("#report")).to_be_visible()
    expect(page.locator("#never-matched li").first).to_be_visible()


def test_the_widget_answers_on_an_allowed_site(browser, server, help_centres):
    _, (allowed, _) = help_centres
    context = browser.new_context()
    page = context.new_page()
    problems = Problems(page)
    page.goto(allowed)
    page.locator(".searcher-widget input").press_sequentially("how can I export my notes", delay=20)
    expect(page.locator(".searcher-widget li").first).to_have_attribute("data-id", "faq-043")
    # the host page's red borders stop at the shadow root
    border = page.locator(".searcher-widget input").evaluate("input => getComputedStyle(input).borderTopWidth")
    assert border == "1px"
    assert problems.messages == []
    context.close()


def test_the_widget_shows_nothing_on_a_site_cors_refuses(browser, server, help_centres):
    _, (_, refused) = help_centres
    context = browser.new_context()
    page = context.new_page()
    problems = Problems(page)
    page.goto(refused)
    page.locator(".searcher-widget input").fill("how can I export my notes")
    expect(page.locator(".searcher-widget .message")).to_contain_text("not available")
    expect(page.locator(".searcher-widget li")).to_have_count(0)
    assert any("CORS" in message for message in problems.messages)
    context.close()
