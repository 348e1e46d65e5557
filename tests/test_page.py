"""The page at `/` in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium): choose a CT image, see label, probability, threshold and the Grad-CAM overlay, and
the model card; choose a blank image and see it refused; choose several slices or a zip archive
and see one study verdict, the slices in order with their probabilities and the Grad-CAM of the
top slice; choose two DICOM series and see them refused, then answered one by one. A screenshot
goes to pytest's temporary folder, never into the repository."""

import io
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


def open_page(browser, server):
    """Opens the page of `server`, enters the API key and waits for the model card; returns a
    30 s waiter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{server.port}/")
    key = browser.find_element(By.ID, "key")
    key.send_keys(API_KEY)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "Model card" in d.find_element(By.ID, "card").text)
    return wait


def test_page_predicts_explains_and_shows_the_model_card(browser, covidct_bin, model_package, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    server = Server(covidct_bin, model_package, tmp_path)
    try:
        image = training_image(model_package)
        wait = open_page(browser, server)
        browser.find_element(By.ID, "file").send_keys(str(image))
        overlay = wait.until(ready.presence_of_element_located((By.ID, "overlay")))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
        assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 384
        text = browser.find_element(By.ID, "prediction").text
        assert "label" in text and "threshold" in text and "probability of COVID" in text
        assert "COVID" in text.split("label")[1]
        assert "resnet18" in browser.find_element(By.ID, "model").text
        # The card is rendered, not shown as Markdown: headings and tables, no `|---|` or `## `.
        card = browser.find_element(By.ID, "card")
        headings = [h.text for h in card.find_elements(By.TAG_NAME, "h2")]
        assert "Intended use" in headings and any(h.startswith("Evaluation") for h in headings), headings
        assert card.find_elements(By.TAG_NAME, "table")
        assert "|---" not in card.text and "## " not in card.text
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


def _study_answer(server, paths, query=""):
    """What the service answers for these files as one study (multipart, as the page sends them)."""
    from test_serve import multipart

    body, content_type = multipart([(p.name, p.read_bytes()) for p in paths])
    status, answer = server.json("POST", "/v1/predict/study" + query, body, content_type, timeout=120)
    assert status == 200, answer
    return answer


def test_page_sends_several_slices_or_a_zip_as_one_study(browser, covidct_bin, model_package, tmp_path):
    import zipfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    from test_serve import dicom, training_slice

    server = Server(covidct_bin, model_package, tmp_path)
    try:
        wait = open_page(browser, server)
        file_input = browser.find_element(By.ID, "file")
        assert file_input.get_attribute("multiple") is not None
        assert ".zip" in file_input.get_attribute("accept")

        def shown_study(previous=None):
            """The study box once a new answer replaced `previous`."""
            wait.until(lambda d: d.find_elements(By.ID, "study") and d.find_element(By.ID, "study") != previous)
            return browser.find_element(By.ID, "study")

        # Four training slices, chosen together: one study verdict, the slices in order.
        paths = [
            training_image(model_package, label, n)
            for label, n in (("COVID", 13), ("COVID", 5), ("non-COVID", 6), ("COVID", 9))
        ]
        expected = _study_answer(server, paths)
        (want,) = expected["studies"]
        assert want["label"] is not None, want
        file_input.send_keys("\n".join(str(p) for p in paths))
        verdict = shown_study()
        assert want["label"] in verdict.text and f"{want['probability']:.4f}" in verdict.text
        assert f"{want['threshold']:.4f}" in verdict.text and want["rule"] in verdict.text
        assert "4 used, 0 refused" in verdict.text
        strip = browser.find_element(By.ID, "strip")
        slices = strip.find_elements(By.CLASS_NAME, "slice")
        assert len(slices) == 4
        for element, s in zip(slices, want["slices"]):
            assert f"{s['probability']:.4f}" in element.text
            assert s["filename"] in element.get_attribute("title")
            assert ("driver" in element.get_attribute("class").split()) == (s["position"] in want["drivers"])
            # The chosen file's own thumbnail, loaded from an object URL.
            thumb = element.find_element(By.TAG_NAME, "img")
            assert thumb.get_attribute("src").startswith("blob:")
            wait.until(
                lambda d, thumb=thumb: d.execute_script(
                    "return arguments[0].complete && arguments[0].naturalWidth", thumb
                )
            )
        assert [s["filename"] for s in want["slices"]] == [
            "COVID (5).png",
            "COVID (9).png",
            "COVID (13).png",
            "non-COVID (6).png",
        ]
        overlay = browser.find_element(By.ID, "study-overlay")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
        assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 384
        assert not browser.find_elements(By.ID, "prediction")
        browser.save_screenshot(str(tmp_path / "study.png"))

        # A zip of the same slices, a blank image and a broken file: bars instead of thumbnails,
        # the blank slice refused and left out, the broken file listed.
        archive = tmp_path / "series.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for p in paths:
                z.write(p, p.name)
            blank = io.BytesIO()
            Image.new("L", (64, 64), 0).save(blank, "PNG")
            z.writestr("zz-blank.png", blank.getvalue())
            z.writestr("zz-broken.png", b"not an image")
        file_input.send_keys(str(archive))
        verdict = shown_study(verdict)
        assert f"{want['probability']:.4f}" in verdict.text and "4 used, 1 refused" in verdict.text
        slices = browser.find_element(By.ID, "strip").find_elements(By.CLASS_NAME, "slice")
        assert len(slices) == 5
        assert not browser.find_element(By.ID, "strip").find_elements(By.TAG_NAME, "img")
        assert all(e.find_elements(By.CLASS_NAME, "bar") for e in slices[:4])
        assert "refused" in slices[4].get_attribute("class").split() and "refused" in slices[4].text
        assert "zz-broken.png" in browser.find_element(By.ID, "unreadable").text
        browser.save_screenshot(str(tmp_path / "study-zip.png"))

        # Two DICOM series: refused plainly, then answered one by one on request.
        series = tmp_path / "dicom"
        series.mkdir()
        dicoms = []
        for s, uid in enumerate(("1.2.3.4.1", "1.2.3.4.2")):
            for k in range(3):
                path = series / f"IM{s}{k}.dcm"
                path.write_bytes(
                    dicom(
                        training_slice("COVID", 5 + k),
                        study_uid="1.2.3.4",
                        series_uid=uid,
                        instance=k + 1,
                        position=[0, 0, 10.0 * (3 - k)],
                        orientation=[1, 0, 0, 0, 1, 0],
                    )
                )
                dicoms.append(path)
        file_input.send_keys("\n".join(str(p) for p in dicoms))
        error = wait.until(ready.presence_of_element_located((By.ID, "study-error")))
        assert "mixed_studies" in error.text and "1.2.3.4.1" in error.text and "1.2.3.4.2" in error.text
        browser.save_screenshot(str(tmp_path / "study-mixed.png"))
        error.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: d.find_elements(By.ID, "study-1"))
        assert len(browser.find_elements(By.CLASS_NAME, "study-result")) == 2
        assert len(browser.find_element(By.ID, "strip-1").find_elements(By.CLASS_NAME, "slice")) == 3
        browser.save_screenshot(str(tmp_path / "study-split.png"))

        # Dropped files take the same path: two slices and a blank one as one study.
        import base64

        dropped = [(p.name, base64.b64encode(p.read_bytes()).decode()) for p in paths[:2]] + [
            ("zz.png", base64.b64encode(blank.getvalue()).decode())
        ]
        previous = browser.find_element(By.ID, "study")
        browser.execute_script(
            """
            const transfer = new DataTransfer();
            for (const [name, data] of arguments[0]) {
              const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
              transfer.items.add(new File([bytes], name, { type: "image/png" }));
            }
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        """,
            dropped,
        )
        verdict = shown_study(previous)
        assert "No verdict" in verdict.text and "2 used, 1 refused of 3" in verdict.text
        assert len(browser.find_element(By.ID, "strip").find_elements(By.CLASS_NAME, "slice")) == 3

        # One file alone is still explained as before.
        file_input.send_keys(str(paths[0]))
        wait.until(ready.presence_of_element_located((By.ID, "prediction")))
        assert not browser.find_elements(By.ID, "study")
    finally:
        server.stop()
