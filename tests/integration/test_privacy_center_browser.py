"""The privacy center in headless Chromium (Debian's chromium and chromium-driver, driven by selenium), against
`consent serve` on the embedded default and on PostgreSQL + NATS; accessibility checked by axe-core."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from consent.adapters import migrate
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    NATS_URL,
    SHARED_KEYS_ENV,
    USER_TOKEN_SECRET,
    create_postgres_database,
    delete_nats_stream,
    drop_postgres_database,
    new_nats_names,
    user_headers,
    wait_ready,
)
from tests.integration.test_readme_tour import free_port

AXE = Path(__file__).resolve().parents[2] / ".cache" / "axe-core" / "axe.min.js"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MARKETING = {"title": "Marketing emails", "description": "Offers by email", "legal_basis": "consent",
             "retention": "P90D"}
ANALYTICS = {"title": "Product analytics", "description": "How the app is used", "legal_basis": "legitimate_interest",
             "retention": "P1Y"}
BILLING = {"title": "Billing", "description": "Invoices", "legal_basis": "legal_obligation", "retention": "P10Y"}


@pytest.fixture(scope="module", params=["embedded", "postgresql+nats"])
def served(request, tmp_path_factory) -> Iterator[str]:
    """`consent serve` on a port of its own, with a catalog: a consent purpose two partners may use, a
    legitimate-interest purpose and a legal obligation."""
    env = {**os.environ, **SHARED_KEYS_ENV, "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_LOG_FORMAT": "text",
           "CONSENT_USER_TOKEN_SECRET": USER_TOKEN_SECRET}
    database, stream = None, None
    if request.param == "embedded":
        env["CONSENT_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('pc')}/c.db"
    else:
        database = asyncio.run(create_postgres_database())
        migrate.upgrade(database)
        stream, prefix = new_nats_names()
        env.update(CONSENT_DATABASE_URL=database, CONSENT_NATS_URL=NATS_URL, CONSENT_NATS_STREAM=stream,
                   CONSENT_NATS_SUBJECT_PREFIX=prefix)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        for scope in ("profile", "orders"):
            httpx.put(f"{base}/v1/scopes/{scope}", headers=ADMIN,
                      json={"title": scope.capitalize(), "description": "", "sensitivity": "medium"})
        for purpose_id, body in (("marketing", MARKETING), ("analytics", ANALYTICS), ("billing", BILLING)):
            assert httpx.put(f"{base}/v1/purposes/{purpose_id}", headers=ADMIN, json=body).status_code == 201
        for partner in ("acme", "globex"):
            assert httpx.put(f"{base}/v1/partners/{partner}", headers=ADMIN, json={
                "name": partner.capitalize(), "status": "active",
                "data_uses": {"marketing": ["profile"]}}).status_code == 201
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)
        if database is not None:
            asyncio.run(drop_postgres_database(database))
            asyncio.run(delete_nats_stream(stream))


def browser(language: str = "en") -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--lang={language}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture
def chrome() -> Iterator[WebDriver]:
    driver = browser()
    try:
        yield driver
    finally:
        driver.quit()


def link(base: str, subject_id: str) -> str:
    answer = httpx.post(f"{base}/v1/subjects/{subject_id}/privacy-center/sessions", headers=user_headers(subject_id))
    assert answer.status_code == 201, answer.text
    return base + answer.json()["url"]


def switch(driver: WebDriver, purpose: str, partner: str):
    return driver.find_element(By.CSS_SELECTOR, f'input[data-purpose="{purpose}"][data-partner="{partner}"]')


def serious_violations(driver: WebDriver) -> list[str]:
    """axe-core's serious and critical findings (WCAG 2.0-2.2 A and AA rules) on the current page."""
    assert AXE.exists(), f"{AXE} is missing: `make browser-deps` fetches axe-core"
    driver.execute_script(AXE.read_text())
    found = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})
           .then(r => done(JSON.stringify(r.violations)), e => done(JSON.stringify([{id: 'axe-error', impact:
           'critical', help: String(e)}])));""")
    return [f"{v['id']}: {v.get('help')}" for v in json.loads(found) if v.get("impact") in ("serious", "critical")]


def shows(driver: WebDriver, text: str) -> bool:
    """Whether the page says `text`, once the navigation a click started has finished (5 s at most)."""
    try:
        WebDriverWait(driver, 5).until(lambda d: text in d.page_source)
    except TimeoutException:
        return False
    return True


def consents(base: str, subject_id: str) -> dict[str | None, str]:
    answer = httpx.get(f"{base}/v1/subjects/{subject_id}/consents", headers=ADMIN).json()
    return {(c["purpose"], c["partner"]): c["status"] for c in answer["consents"]}


def test_a_partner_switched_on_then_off_is_saved_as_the_api_records_it(served, chrome):
    chrome.get(link(served, "ann"))
    assert chrome.current_url == f"{served}/privacy-center"
    assert not serious_violations(chrome)
    switch(chrome, "marketing", "acme").click()
    chrome.find_element(By.CSS_SELECTOR, '[data-action="save"]').click()
    assert shows(chrome, "Your choices were saved.")
    assert switch(chrome, "marketing", "acme").is_selected()
    assert consents(served, "ann") == {("marketing", "acme"): "granted"}
    assert not serious_violations(chrome)  # with the notice and a history
    switch(chrome, "marketing", "acme").click()
    chrome.find_element(By.CSS_SELECTOR, '[data-action="save"]').click()
    assert shows(chrome, "You withdrew")
    assert not switch(chrome, "marketing", "acme").is_selected()
    assert consents(served, "ann") == {("marketing", "acme"): "withdrawn"}
    history = httpx.get(f"{served}/v1/subjects/ann/history", headers=ADMIN).json()["events"]
    shown = [item.get_attribute("data-event-id") for item in chrome.find_elements(By.CSS_SELECTOR, "[data-event-id]")]
    assert shown == [e["event_id"] for e in reversed(history)]
    assert [e["data"]["evidence"]["collection_point"] for e in history] == ["privacy-center"] * 2


def test_an_objection_to_a_legitimate_interest_and_information_without_a_switch(served, chrome):
    chrome.get(link(served, "bob"))
    assert chrome.find_elements(By.CSS_SELECTOR, 'section[data-purpose="billing"] input[type="checkbox"]') == []
    switch(chrome, "analytics", "_").click()
    chrome.find_element(By.CSS_SELECTOR, '[data-action="save"]').click()
    assert shows(chrome, "Your choices were saved.")
    assert consents(served, "bob") == {("analytics", None): "objected"}
    assert "You objected" in chrome.find_element(By.CSS_SELECTOR, 'section[data-purpose="analytics"]').text


def test_the_whole_flow_works_with_the_keyboard_alone(served, chrome):
    chrome.get(link(served, "cy"))
    body = chrome.find_element(By.TAG_NAME, "body")
    body.click()

    def tab_to(matches) -> None:
        for _ in range(40):
            chrome.switch_to.active_element.send_keys(Keys.TAB)
            if matches(chrome.switch_to.active_element):
                return
        raise AssertionError("not reachable with the Tab key")

    tab_to(lambda e: e.get_attribute("data-partner") == "globex")
    chrome.switch_to.active_element.send_keys(Keys.SPACE)
    tab_to(lambda e: e.get_attribute("data-action") == "save")
    chrome.switch_to.active_element.send_keys(Keys.ENTER)
    assert shows(chrome, "Your choices were saved.")
    assert consents(served, "cy") == {("marketing", "globex"): "granted"}


def test_a_used_link_another_subject_and_a_missing_csrf_token_are_refused(served, chrome):
    entry = link(served, "dee")
    chrome.get(entry)
    theirs = httpx.post(f"{served}/v1/subjects/eve/consents", headers=ADMIN,
                        json={"changes": [{"purpose": "marketing", "action": "grant"}]}).json()["receipts"][0]
    chrome.get(f"{served}/privacy-center/receipts/{theirs['event_id']}")
    assert "nothing was changed" in chrome.page_source  # not found here: another subject's event
    chrome.get(f"{served}/privacy-center")
    chrome.execute_script('document.querySelector("input[name=csrf]").remove()')
    switch(chrome, "marketing", "acme").click()
    chrome.find_element(By.CSS_SELECTOR, '[data-action="save"]').click()
    assert shows(chrome, "This form has expired")
    assert consents(served, "dee") == {}
    other = browser()
    try:
        other.get(entry)  # the same link, a second time: refused, and no session
        assert "This link can no longer be used" in other.page_source
        assert not serious_violations(other)
        other.get(f"{served}/privacy-center")
        assert "Your session has ended" in other.page_source
    finally:
        other.quit()


def test_erasure_is_confirmed_then_ends_the_session(served, chrome):
    chrome.get(link(served, "fay"))
    switch(chrome, "marketing", "_").click()
    chrome.find_element(By.CSS_SELECTOR, '[data-action="save"]').click()
    assert shows(chrome, "Your choices were saved.")
    chrome.find_element(By.LINK_TEXT, "Erase my data").click()
    assert shows(chrome, "Erase your data for good?")
    assert not serious_violations(chrome)
    chrome.find_element(By.CSS_SELECTOR, '[data-action="erase-confirm"]').click()
    assert shows(chrome, "Your data has been erased.")
    assert consents(served, "fay") == {}
    chrome.get(f"{served}/privacy-center")
    assert "Your session has ended" in chrome.page_source


def test_the_page_in_french(served):
    french = browser("fr")
    try:
        french.get(link(served, "gus"))
        assert french.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
        assert "Vos choix de confidentialité" in french.page_source
        assert "Conservé 90 jours." in french.page_source
        assert not serious_violations(french)
    finally:
        french.quit()
