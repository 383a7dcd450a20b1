"""The dashboard in a real headless browser: Debian's chromium driven by Playwright.

The app runs as the `web` process does (gunicorn, over real HTTP) beside a real Celery worker,
so an event tracked over the API is stored by the worker, published by the live feed and drawn
by the page's script. Screenshots go to the test's tmp dir and to `test-artifacts/` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Tenant
from tests.support import ROOT
from tests.support import WorkerProcess
from tests.support import free_port
from tests.support import process_env
from tests.support import start_http_server
from tests.support import stop_process_group
from tests.support import wait_for

pytestmark = pytest.mark.worker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WAIT_MS = 20_000

try:
    from playwright.sync_api import Browser
    from playwright.sync_api import Page
    from playwright.sync_api import expect
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - CI installs it with the dev extras
    sync_playwright = None


def _unavailable(reason: str) -> None:
    # CI installs both (.ci/run), so there a missing browser is a failure, never a quiet skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Debian's chromium is not installed at {CHROMIUM} "
                     "(apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def web_process(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The `web` process (gunicorn with the production settings file) on a free port."""
    port = free_port()
    env = {**process_env(stack_env), "HOST": "127.0.0.1", "PORT": str(port),
           "WEB_CONCURRENCY": "1", "WEB_THREADS": "4", "KRAITER_STREAM_POLL_MS": "50"}
    url = f"http://127.0.0.1:{port}"
    process = start_http_server(
        [sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf", "app:create_app()"],
        env=env, log_path=tmp_path_factory.mktemp("web-logs") / "web.log",
        probe_url=f"{url}/healthz")
    try:
        yield url, process
    finally:
        stop_process_group(process)


@pytest.fixture
def web(web_process: tuple[str, subprocess.Popen[bytes]]) -> str:
    return web_process[0]


@pytest.fixture
def console_errors() -> list[str]:
    """What the page logged as errors; a test that provokes some removes them."""
    return []


@pytest.fixture
def page(browser: Browser, console_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    # A CSP violation or a script error shows up here: the page must have none.
    opened.on("console", lambda message: console_errors.append(message.text)
              if message.type == "error" else None)
    opened.on("pageerror", lambda error: console_errors.append(str(error)))
    opened.set_default_timeout(WAIT_MS)
    yield opened
    context.close()
    assert console_errors == []


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    """Save a full-page PNG in the test's tmp dir and in test-artifacts/; check it is a PNG."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)
    return path


def track(web: str, tenant: Tenant, email: str, event: str, **properties: Any) -> str:
    response = requests.post(f"{web}/api/events", headers=tenant.headers, timeout=10,
                             json={"email": email, "event": event, "properties": properties})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def stored(web: str, tenant: Tenant, event_id: str) -> bool:
    return requests.get(f"{web}/api/events/{event_id}", headers=tenant.headers,
                        timeout=10).status_code == 200


def sign_in(page: Page, web: str, tenant: Tenant) -> None:
    page.goto(f"{web}/dashboard/")
    expect(page).to_have_title("Sign in · Kraiter")
    page.get_by_label("API key").fill(tenant.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{web}/dashboard/feed")


def test_an_event_appears_live_and_its_contact_opens(
        web: str, worker: WorkerProcess, tenant: Tenant, page: Page, tmp_path: Path) -> None:
    created = requests.post(f"{web}/api/contacts", headers=tenant.headers, timeout=10, json={
        "email": "ann@example.com", "properties": {"plan": "pro", "seats": 3}})
    assert created.status_code == 201, created.text
    earlier = track(web, tenant, "ann@example.com", "signup", source="ads")
    wait_for(lambda: stored(web, tenant, earlier), message="the first event to be stored")

    sign_in(page, web, tenant)
    expect(page.locator(f'#feed-list li[data-id="{earlier}"]')).to_be_visible()
    expect(page.locator("#feed-status")).to_have_attribute("data-state", "live")

    event_id = track(web, tenant, "ann@example.com", "checkout.completed", amount=42,
                     currency="EUR")
    item = page.locator(f'#feed-list li[data-id="{event_id}"]')
    expect(item).to_be_visible()
    expect(item.locator(".event-name")).to_have_text("checkout.completed")
    expect(item.locator(".props")).to_contain_text("amount 42")
    expect(item.locator(".props")).to_contain_text("currency EUR")
    # Newest first: the live event is above the one the server rendered.
    assert page.locator("#feed-list > li").first.get_attribute("data-id") == event_id
    desktop = screenshot(page, tmp_path, "dashboard.png")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, tmp_path, "dashboard-phone.png")
    page.set_viewport_size({"width": 1280, "height": 900})
    assert desktop.exists()

    item.get_by_role("link", name="ann@example.com").click()
    page.wait_for_url(f"{web}/dashboard/contacts/cnt_*")
    expect(page.get_by_role("heading", level=1)).to_have_text("ann@example.com")
    properties = page.locator("dl.properties")
    expect(properties).to_contain_text("plan")
    expect(properties).to_contain_text("pro")
    expect(properties).to_contain_text("seats")
    timeline = page.locator("section", has=page.get_by_role("heading", name="Events"))
    expect(timeline).to_contain_text("checkout.completed")
    expect(timeline).to_contain_text("signup")
    screenshot(page, tmp_path, "dashboard-contact.png")


def test_a_filtered_feed_shows_only_matching_events(
        web: str, worker: WorkerProcess, tenant: Tenant, page: Page, tmp_path: Path) -> None:
    sign_in(page, web, tenant)
    page.get_by_label("Event name").fill("checkout.completed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(f"{web}/dashboard/feed?event=checkout.completed&email=")
    expect(page.locator("#feed-status")).to_have_attribute("data-state", "live")

    other = track(web, tenant, "bob@example.com", "page.viewed")
    wait_for(lambda: stored(web, tenant, other), message="the other event to be stored")
    wanted = track(web, tenant, "bob@example.com", "checkout.completed", amount=5)
    expect(page.locator(f'#feed-list li[data-id="{wanted}"]')).to_be_visible()
    # Stored before the wanted one, so it would have been shown by now had it matched.
    expect(page.locator(f'#feed-list li[data-id="{other}"]')).to_have_count(0)

    page.get_by_role("button", name="Pause").click()
    held = track(web, tenant, "bob@example.com", "checkout.completed", amount=6)
    expect(page.get_by_role("button", name="Resume (1 new)")).to_be_visible()
    expect(page.locator(f'#feed-list li[data-id="{held}"]')).to_have_count(0)
    page.get_by_role("button", name="Resume (1 new)").click()
    expect(page.locator(f'#feed-list li[data-id="{held}"]')).to_be_visible()


SEQUENCE = """
trigger:
  api: true
steps:
  - send: welcome
  - delay: 2d
  - send: tips
"""


def test_sequences_sends_and_metrics_pages(
        web: str, worker: WorkerProcess, tenant: Tenant, page: Page, tmp_path: Path) -> None:
    def api(method: str, path: str, **body: Any) -> Any:
        response = requests.request(method, f"{web}/api{path}", headers=tenant.headers,
                                    json=body, timeout=10)
        assert response.status_code < 300, response.text
        return response.json()

    for template in ("welcome", "tips"):
        api("PUT", f"/templates/{template}", name=template.title(), subject=f"{template} mail",
            html="<p>Hello {{ contact.email }}</p>")
    api("PUT", "/sequences/onboarding", name="Onboarding", definition=SEQUENCE)
    api("POST", "/sequences/onboarding/activate")
    for email in ("ann@example.com", "bob@example.com", "cy@example.com"):
        api("POST", "/sequences/onboarding/enrolments", email=email)
    wait_for(lambda: len(api("GET", "/sends?status=sent")["data"]) == 3,
             message="the welcome e-mails to be sent")

    sign_in(page, web, tenant)
    page.get_by_role("link", name="Sequences").click()
    row = page.get_by_role("row", name="Onboarding")
    expect(row).to_contain_text("active")
    expect(row.get_by_role("cell").nth(3)).to_have_text("3")  # active enrolments
    row.get_by_role("link", name="Onboarding").click()
    expect(page.get_by_role("heading", name="Upcoming steps")).to_be_visible()
    upcoming = page.locator("section", has=page.get_by_role("heading", name="Upcoming steps"))
    expect(upcoming.get_by_role("row")).to_have_count(4)  # the header and three contacts
    expect(upcoming).to_contain_text("3 · email tips")
    screenshot(page, tmp_path, "dashboard-sequence.png")

    page.get_by_role("link", name="Sends").click()
    expect(page.locator("tbody .badge-sent")).to_have_count(3)
    page.get_by_label("Status", exact=True).select_option("bounced")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("No bounced sends.")).to_be_visible()

    page.get_by_role("link", name="Metrics").click()
    page.get_by_label("Period", exact=True).select_option("hour")
    page.get_by_role("button", name="Show").click()
    sent = page.locator(".stat", has_text="Sent").locator(".stat-value")
    expect(sent).to_have_text("3")
    expect(page.locator(".chart-wide svg")).to_be_visible()
    expect(page.locator(".chart-narrow svg")).to_be_hidden()
    screenshot(page, tmp_path, "dashboard-metrics.png")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator(".chart-narrow svg")).to_be_visible()
    expect(page.locator(".chart-wide svg")).to_be_hidden()
    screenshot(page, tmp_path, "dashboard-metrics-phone.png")


def test_the_feed_reconnects_and_resumes_after_a_restart(
        web_process: tuple[str, subprocess.Popen[bytes]], worker: WorkerProcess,
        tenant: Tenant, page: Page, console_errors: list[str]) -> None:
    web, process = web_process
    sign_in(page, web, tenant)
    status = page.locator("#feed-status")
    expect(status).to_have_attribute("data-state", "live")
    first = track(web, tenant, "ann@example.com", "before.restart")
    expect(page.locator(f'#feed-list li[data-id="{first}"]')).to_be_visible()

    # Keep the page from reconnecting until an event has been stored in its absence, so that
    # event can only arrive by resuming after the last one the page saw.
    page.route("**/dashboard/stream-token", lambda route: route.abort())
    process.send_signal(signal.SIGHUP)  # gunicorn replaces its worker; open streams end
    expect(status).to_have_attribute("data-state", "waiting")
    missed = track(web, tenant, "ann@example.com", "while.away")
    wait_for(lambda: stored(web, tenant, missed), message="the event to be stored")
    page.unroute("**/dashboard/stream-token")

    expect(page.locator(f'#feed-list li[data-id="{missed}"]')).to_be_visible(timeout=40_000)
    expect(status).to_have_attribute("data-state", "live")
    expect(page.locator(f'#feed-list li[data-id="{first}"]')).to_have_count(1)  # no repeats
    after = track(web, tenant, "ann@example.com", "after.restart")
    expect(page.locator(f'#feed-list li[data-id="{after}"]')).to_be_visible()
    assert [item.get_attribute("data-id") for item in
            page.locator("#feed-list > li").all()] == [after, missed, first]
    # Expected: the blocked token requests, and a stream request that reached the old worker
    # (over a kept-alive connection) while it shut down, refused with 503 and retried.
    console_errors[:] = [text for text in console_errors
                         if "ERR_FAILED" not in text and "status of 503" not in text]
