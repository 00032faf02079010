"""Screenshots of the pages for agents and the help centre, for the README: docs/screenshots/*.png.

    HF_HUB_OFFLINE=1 python benchmarks/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]

Builds the example FAQ on the bundled model in a temporary home, calibrated (a "no good match" threshold
and the inbox's cut) and with a few uncovered questions logged, serves it with `searcher serve` (an API key,
a public key, CORS for a stand-in help centre on another port), and saves 1280×800 PNGs of the agent page,
the inbox, the audit and the widget on the help centre's page, taken with Playwright and the system Chromium.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from searcher import Index
from searcher.sources import read_records

FAQ = Path(__file__).parent.parent / "examples" / "faq.jsonl"
API_KEY, PUBLIC_KEY = "screenshot-key", "screenshot-public-key"
THRESHOLD, NOT_COVERED = 0.5, 0.45
LOGGED = [
    "Can I pay with bitcoin?",
    "pay using crypto coins",
    "Is there a student discount?",
    "discount for students or teachers",
    "How do I forget my password?",
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
HELP_CENTRE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Nimbus Notes Help</title>
<link rel="icon" href="data:,"><style>
body {{ margin: 0; font-family: Georgia, serif; background: #fbf8f3; color: #2d2a26; }}
header {{ background: #2f5d50; color: #fff; padding: 1.2rem 3rem; font-size: 1.3rem; }}
main {{ max-width: 44rem; margin: 2.5rem auto; }}
h1 {{ font-weight: normal; font-size: 2rem; margin-bottom: 0.3rem; }}
</style></head><body><header>Nimbus Notes · Help centre</header><main>
<h1>How can we help?</h1><p>Search our answers, or write to support@nimbusnotes.app.</p>
<script src="{server}/widget.js" data-index="faq" data-public-key="{key}"></script>
</main></body></html>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        home, site = Path(temporary) / "home", Path(temporary) / "site"
        site.mkdir()
        build_index(home)
        help_port, server_port = free_port(), free_port()
        server = f"http://127.0.0.1:{server_port}"
        (site / "index.html").write_text(HELP_CENTRE.format(server=server, key=PUBLIC_KEY))
        help_centre = serve_directory(site, help_port)
        process = start_server(home, server_port, f"http://127.0.0.1:{help_port}")
        try:
            take_screenshots(server, f"http://127.0.0.1:{help_port}", arguments.out, arguments.chromium)
        finally:
            process.terminate()
            process.wait(timeout=30)
            help_centre.shutdown()
    for path in sorted(arguments.out.glob("*.png")):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")


def build_index(home: Path) -> None:
    with Index.create(home / "faq") as index:
        index.add(read_records(FAQ))
        index.set_threshold("dense", THRESHOLD, {"precision": 0.9, "not_covered": NOT_COVERED})
        index.set_logging(True)
        index.search_many(LOGGED, k=3, log=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


def serve_directory(directory: Path, port: int) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_server(home: Path, port: int, help_centre: str) -> subprocess.Popen:
    environment = os.environ | {"SHOT_KEY": API_KEY, "SHOT_PUBLIC_KEY": PUBLIC_KEY, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "searcher", "serve", "--index", "faq", "--home", str(home), "--port", str(port)]
    command += ["--api-key-env", "SHOT_KEY", "--public-key-env", "SHOT_PUBLIC_KEY", "--cors-origin", help_centre]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise SystemExit("searcher serve did not become ready within 60 s")


def take_screenshots(server: str, help_centre: str, out: Path, chromium: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(
            f"if (location.origin === '{server}') sessionStorage.setItem('searcher.api-key', '{API_KEY}')"
        )
        page = context.new_page()
        page.goto(f"{server}/?index=faq&q=I+can%27t+remember+my+password")
        page.locator("#results li.result").first.wait_for()
        page.locator("#results li.result").first.get_by_role("button", name="Helpful", exact=True).click()
        page.locator(".feedback-note", has_text="recorded").wait_for()
        page.locator("#results li.result").first.focus()
        page.screenshot(path=out / "agent.png")
        page.goto(f"{server}/?index=faq&q=what+is+the+weather+like+on+mars")
        page.locator("#no-match").wait_for()
        page.screenshot(path=out / "no-match.png")
        page.goto(f"{server}/inbox?since=")
        page.locator("li.group").first.wait_for()
        page.screenshot(path=out / "inbox.png")
        page.goto(f"{server}/audit")
        page.locator("#report").wait_for()
        page.screenshot(path=out / "audit.png")
        page.goto(help_centre)
        page.locator(".searcher-widget input").fill("how can I get my notes out as markdown")
        page.locator(".searcher-widget li").first.wait_for()
        page.screenshot(path=out / "widget.png")
        browser.close()


if __name__ == "__main__":
    main()
