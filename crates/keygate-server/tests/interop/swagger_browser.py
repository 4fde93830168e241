"""The headless Chromium both Swagger UI scripts drive (swagger_ui.py, swagger_admin.py):
Debian's chromium and chromium-driver, a fresh profile, nothing fetched but keygate."""

import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait


def start():
    """A driver, and a 20 s wait on it."""
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
    return driver, WebDriverWait(driver, 20)


def click(driver, element):
    """Scrolls to the element and clicks it (the Authorize dialog scrolls)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    driver.execute_script("arguments[0].click();", element)


def screenshot(driver):
    """Saves what the page showed when a step failed, and says where."""
    shot = tempfile.mktemp(prefix="swagger-failure-", suffix=".png")
    driver.save_screenshot(shot)
    print(f"screenshot of the failure: {shot}")
