"""Swagger UI at /docs in a real headless Chromium: the Authorize button's OAuth2 password
flow gets a token from keygate's /token, and "Try it out" on GET /userinfo then answers 200.

Usage: swagger_ui.py BASE_URL USERNAME PASSWORD
"""

import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, username, password = sys.argv[1:4]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,2400",
    f"--user-data-dir={tempfile.mkdtemp()}",
):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 20)


def click(element):
    """Scrolls to the element and clicks it (the Authorize dialog scrolls)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    driver.execute_script("arguments[0].click();", element)

try:
    driver.get(base + "/docs/")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button.btn.authorize"))).click()
    containers = wait.until(
        EC.presence_of_all_elements_located((By.CSS_SELECTOR, ".modal-ux .auth-container"))
    )
    flow = next(c for c in containers if "password" in c.text and "oauth2" in c.text.lower())
    flow.find_element(By.CSS_SELECTOR, "input#oauth_username").send_keys(username)
    flow.find_element(By.CSS_SELECTOR, "input#oauth_password").send_keys(password)
    click(flow.find_element(By.CSS_SELECTOR, "button.modal-btn.auth.authorize"))
    # On success the flow's form turns into "Authorized" with a Logout button.
    wait.until(lambda d: "Logout" in flow.text)
    assert "Authorized" in flow.text, flow.text
    print("authorize: ok")
    click(driver.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done"))

    op = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#operations-verification-userinfo")))
    click(op.find_element(By.CSS_SELECTOR, ".opblock-summary-control"))
    click(wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#operations-verification-userinfo button.try-out__btn"))))
    click(wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#operations-verification-userinfo button.execute"))))
    status = wait.until(
        EC.presence_of_element_located(
            (By.CSS_SELECTOR, "#operations-verification-userinfo .live-responses-table tbody .response-col_status")
        )
    )
    body = driver.find_element(By.CSS_SELECTOR, "#operations-verification-userinfo .live-responses-table .microlight").text
    assert status.text.strip().startswith("200"), status.text
    assert f'"sub": "{username}"' in body, body
    print("try it out /userinfo: 200")
except Exception:
    shot = tempfile.mktemp(prefix="swagger-failure-", suffix=".png")
    driver.save_screenshot(shot)
    print(f"screenshot of the failure: {shot}")
    raise
finally:
    driver.quit()
