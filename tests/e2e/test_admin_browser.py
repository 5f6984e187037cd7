"""The admin pages in a real browser: Debian's headless Chromium driven over WebDriver
(selenium + chromium-driver, both installed by scripts/test). Logs in with the admin token,
opens every page, flips an organization's runner through the form (a worker of that runtime is
registered first, so the guard lets it through) and sees the audit row, and saves a screenshot
of each page under target/admin-screenshots/ (ADMIN_SCREENSHOTS overrides the directory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from hearth_proc import KEY, ROOT, Hearth, binary

ADMIN = "e2e-admin-token-0123456789"
HOSTILE = "<script>alert(1)</script>"
SHOTS = Path(os.environ.get("ADMIN_SCREENSHOTS", ROOT / "target" / "admin-screenshots"))


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail(
            "the admin browser test needs Debian's `chromium` and `chromium-driver` on PATH "
            "(scripts/test installs them with apt when run as root: "
            "apt-get install -y chromium chromium-driver)"
        )
    return browser, driver


def post_json(url: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def cli(hearth: Hearth, *args: str) -> str:
    db = os.path.join(hearth.dir.name, "hearth.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    out = subprocess.run([binary(), "--db", db, *args], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def hearth():
    # No upstream is needed: the `echo` model answers in process.
    with Hearth("http://127.0.0.1:9") as h:
        yield h


@pytest.fixture
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


def wait_for(driver, css: str):
    """The element matching `css`, once the page that follows a click has it (up to 15 s)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 15).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def wait_url(driver, suffix: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 15).until(lambda d: d.current_url.endswith(suffix))


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    # The whole page: grow the window to the document's height first.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(height + 120, 600), 4000))
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(width, 900)


def test_an_admin_works_the_pages_in_a_real_browser(hearth: Hearth, driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base = hearth.base_url
    cli(hearth, "orgs", "create", "acme", "--name", "Acme Corp")
    worker_token = cli(hearth, "workers", "token", "create").strip().splitlines()[-1]
    for name in (HOSTILE, "go-worker-1"):
        post_json(f"{base}/v1/workers/register",
                  {"name": name, "runtime": "go", "version": "1.4.0", "hostname": "box-1", "capacity": 4},
                  worker_token)
    for text in ("hello from the browser test", "a second <b>turn</b>"):
        post_json(f"{base}/v1/chat/completions",
                  {"model": "echo", "messages": [{"role": "user", "content": text}]}, KEY)
    post_json(f"{base}/admin/api/keys", {"org": "acme", "name": "acme-ci"}, ADMIN)

    # Login required: /admin lands on the login form.
    driver.get(f"{base}/admin")
    assert driver.current_url.endswith("/admin/login"), driver.current_url
    shot(driver, "01-login")
    driver.find_element(By.NAME, "token").send_keys(ADMIN)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_url(driver, "/admin")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert "go" in driver.find_element(By.TAG_NAME, "table").text
    shot(driver, "02-overview")

    driver.get(f"{base}/admin/workers")
    table = driver.find_element(By.TAG_NAME, "table").text
    assert HOSTILE in table, "the hostile name is shown as text"
    assert "1.4.0" in table and "healthy" in table
    try:
        driver.switch_to.alert
        pytest.fail("a worker's name ran as a script")
    except NoAlertPresentException:
        pass
    shot(driver, "03-workers")

    driver.get(f"{base}/admin/sessions")
    links = driver.find_elements(By.CSS_SELECTOR, "table a.mono")
    assert len(links) == 2, [l.text for l in links]
    shot(driver, "04-sessions")
    links[0].click()
    wait_for(driver, "details")
    assert driver.find_element(By.TAG_NAME, "h1").text.startswith("Session ses_")
    driver.find_element(By.TAG_NAME, "summary").click()
    profile = driver.find_element(By.CSS_SELECTOR, "details pre").text
    assert json.loads(profile)["runner"] == "ts", profile
    assert "run.completed" in driver.page_source
    shot(driver, "05-session")

    driver.get(f"{base}/admin/orgs")
    assert "acme" in driver.find_element(By.TAG_NAME, "table").text
    shot(driver, "06-orgs")

    # Flip acme to go through the form: a healthy go worker exists, so the guard lets it through.
    driver.find_element(By.LINK_TEXT, "acme").click()
    wait_for(driver, "form.row")
    Select(driver.find_element(By.NAME, "runner")).select_by_value("go")
    driver.find_element(By.NAME, "reason").send_keys("browser flip")
    driver.find_element(By.CSS_SELECTOR, "button[value=set]").click()
    audit = wait_for(driver, "table.audit").text
    assert driver.current_url.endswith("/admin/orgs/acme"), driver.current_url
    assert "admin-web" in audit and "browser flip" in audit and "go" in audit, audit
    facts = driver.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert "flag" in facts, facts
    shot(driver, "07-org")

    driver.get(f"{base}/admin/keys")
    Select(driver.find_element(By.NAME, "org")).select_by_value("acme")
    driver.find_element(By.NAME, "name").send_keys("from-the-browser")
    driver.find_element(By.CSS_SELECTOR, "form[action='/admin/keys'] button").click()
    secret = wait_for(driver, ".secret-value").text
    assert secret.startswith("hk_"), secret
    shot(driver, "08-keys")

    # Phone width: the sessions page still fits.
    driver.set_window_size(390, 844)
    driver.get(f"{base}/admin/sessions")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 400
    assert driver.save_screenshot(str(SHOTS / "09-sessions-phone.png"))
    driver.set_window_size(1280, 900)

    # Logout ends the login.
    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_url(driver, "/admin/login")
    driver.get(f"{base}/admin/keys")
    assert driver.current_url.endswith("/admin/login")
