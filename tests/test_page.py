"""The page at `/` in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium): choose a CT image, see label, probability, threshold and the Grad-CAM overlay, and
the model card; choose a blank image and see it refused. A screenshot goes to pytest's temporary folder, never into the repository."""

import shutil

import pytest

from PIL import Image

from conftest import training_image
from test_serve import API_KEY, Server

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_page_predicts_explains_and_shows_the_model_card(browser, covidct_bin, model_package, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(covidct_bin, model_package, tmp_path)
    try:
        image = training_image(model_package)
        browser.get(f"http://127.0.0.1:{server.port}/")
        key = browser.find_element(By.ID, "key")
        key.send_keys(API_KEY)
        browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: "Model card" in d.find_element(By.ID, "card").text)
        browser.find_element(By.ID, "file").send_keys(str(image))
        overlay = wait.until(ready.presence_of_element_located((By.ID, "overlay")))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
        assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 384
        text = browser.find_element(By.ID, "prediction").text
        assert "label" in text and "threshold" in text and "probability of COVID" in text
        assert ("COVID" in text.split("label")[1])
        assert "resnet18" in browser.find_element(By.ID, "model").text
        screenshot = tmp_path / "page.png"
        browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        print(f"screenshot: {screenshot}")

        # An image the model cannot judge is refused plainly: no label, the failed checks.
        blank = tmp_path / "blank.png"
        Image.new("L", (64, 64), 0).save(blank)
        browser.find_element(By.ID, "file").send_keys(str(blank))
        refusal = wait.until(ready.presence_of_element_located((By.ID, "refusal")))
        assert "not an image this model can judge" in refusal.text
        assert "intensity_std" in refusal.text
        assert not browser.find_elements(By.ID, "prediction")
    finally:
        server.stop()
