"""Swagger UI at /docs in a real headless Chromium, on a keygate with a directory: the
Authorize button's OAuth2 client-credentials flow, with the scope keygate:admin ticked, gets
a token for an operator client, and "Try it out" on GET /admin/v1/{collection} then lists
the directory's clients (200).

Usage: swagger_admin.py BASE_URL CLIENT_ID API_KEY
"""

import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

import swagger_browser

base, client_id, api_key = sys.argv[1:4]
driver, wait = swagger_browser.start()


def click(element):
    swagger_browser.click(driver, element)


OP = "#operations-admin-admin_list"
try:
    driver.get(base + "/docs/")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button.btn.authorize"))).click()
    containers = wait.until(
        EC.presence_of_all_elements_located((By.CSS_SELECTOR, ".modal-ux .auth-container"))
    )
    flow = next(c for c in containers if "clientCredentials" in c.text)
    flow.find_element(By.CSS_SELECTOR, 'input[data-name="clientId"]').send_keys(client_id)
    flow.find_element(By.CSS_SELECTOR, 'input[data-name="clientSecret"]').send_keys(api_key)
    click(flow.find_element(By.CSS_SELECTOR, 'input[type="checkbox"][data-value="keygate:admin"]'))
    click(flow.find_element(By.CSS_SELECTOR, "button.modal-btn.auth.authorize"))
    wait.until(lambda d: "Logout" in flow.text)
    assert "Authorized" in flow.text, flow.text
    print("authorize: ok")
    click(driver.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done"))

    op = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, OP)))
    click(op.find_element(By.CSS_SELECTOR, ".opblock-summary-control"))
    click(wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f"{OP} button.try-out__btn"))))
    collection = wait.until(
        EC.presence_of_element_located((By.CSS_SELECTOR, f'{OP} input[placeholder="collection"]'))
    )
    collection.send_keys("clients")
    # Leaving the field commits it to Swagger UI's state before Execute validates it.
    collection.send_keys(Keys.TAB)
    wait.until(lambda d: collection.get_attribute("value") == "clients")
    execute = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"{OP} button.execute")))
    execute.click()
    status = wait.until(
        EC.presence_of_element_located(
            (By.CSS_SELECTOR, f"{OP} .live-responses-table tbody .response-col_status")
        )
    )
    body = driver.find_element(By.CSS_SELECTOR, f"{OP} .live-responses-table .microlight").text
    assert status.text.strip().startswith("200"), f"{status.text}: {body}"
    assert '"items"' in body and '"created-by-the-test"' in body, body
    print("try it out /admin/v1/clients: 200")
except Exception:
    swagger_browser.screenshot(driver)
    raise
finally:
    driver.quit()
