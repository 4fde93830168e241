"""Swagger UI at /docs in a real headless Chromium: the Authorize button's OAuth2 password
flow gets a token from keygate's /token, and "Try it out" on GET /userinfo then answers 200.

Usage: swagger_ui.py BASE_URL USERNAME PASSWORD
"""

import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

import swagger_browser

base, username, password = sys.argv[1:4]
driver, wait = swagger_browser.start()


def click(element):
    swagger_browser.click(driver, element)


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
    swagger_browser.screenshot(driver)
    raise
finally:
    driver.quit()
