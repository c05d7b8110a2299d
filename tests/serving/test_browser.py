"""The pages a person opens, in a real headless Chromium (Debian's chromium + chromium-driver, through
Selenium) against the production server: the upload page classifies a photo exactly as the API does, and
Swagger UI at /docs/ executes a request."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen

from tests.conftest import REPO, wait

pytestmark = pytest.mark.slow
PHOTOS = sorted((REPO / "examples" / "photos").glob("*"))


@pytest.mark.parametrize("photo", [PHOTOS[0], PHOTOS[-1]], ids=lambda p: p.name)
def test_the_upload_page_shows_the_class_the_api_gives(server, browser, photo: Path, tmp_path):
    browser.get(f"{server}/")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "answered")

    with photo.open("rb") as handle:
        api = requests.post(f"{server}/models/clothes/latest", files={"file": handle}, timeout=30).json()
    expected = api["predictions"][0]
    assert browser.find_element(By.ID, "label").text == expected["label"]
    assert browser.find_element(By.ID, "version").text == f"clothes v{api['model']['version']}"
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert len(bars) == 10
    assert browser.find_element(By.CSS_SELECTOR, "#bars li.top").get_attribute("data-label") == expected["label"]
    # The 28x28 picture the model saw is drawn: not all black.
    drawn = browser.execute_script(
        "const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;"
        "let lit = 0; for (let i = 0; i < d.length; i += 4) { if (d[i] > 0) lit++; } return lit;"
    )
    assert drawn > 20
    assert browser.find_element(By.ID, "ood").is_displayed() == (expected["in_distribution"] is False)
    assert browser.get_screenshot_as_file(str(tmp_path / "upload.png"))


def test_the_upload_page_says_when_a_photo_is_not_clothing(server, browser, tmp_path):
    from tasks.evaluation.ood_sources import ood_files

    stripes = tmp_path / "stripes.png"
    stripes.write_bytes(ood_files("stripes", 1, seed=0)[0])
    with stripes.open("rb") as handle:
        api = requests.post(f"{server}/models/clothes/latest", files={"file": handle}, timeout=30).json()
    assert api["predictions"][0]["in_distribution"] is False  # the flag of the server under test
    browser.get(f"{server}/")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "file").send_keys(str(stripes))
    notice = wait(browser).until(seen.visibility_of_element_located((By.ID, "ood")))
    assert "does not look like the clothing" in notice.text


def test_the_upload_page_says_why_a_file_is_refused(server, browser, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"this is text, not a PNG")
    browser.get(f"{server}/")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "file").send_keys(str(not_an_image))
    error = wait(browser).until(seen.visibility_of_element_located((By.ID, "error")))
    assert error.text == "400: could not decode the image; send a valid PNG or JPEG"


def test_swagger_ui_executes_a_request(server, browser):
    browser.get(f"{server}/docs")  # redirected to /docs/
    summary = wait(browser).until(
        seen.element_to_be_clickable((By.CSS_SELECTOR, '.opblock-summary-path[data-path="/models"]'))
    )
    summary.click()
    wait(browser).until(seen.element_to_be_clickable((By.CSS_SELECTOR, ".try-out__btn"))).click()
    wait(browser).until(seen.element_to_be_clickable((By.CSS_SELECTOR, ".btn.execute"))).click()
    status = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"))
    )
    assert status.text.strip() == "200"
    body = browser.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .microlight").text
    assert '"name": "clothes"' in body
    assert '"versions"' in body
