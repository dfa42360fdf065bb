"""The chat page of `minicpmv serve` (python/minicpmv/web/index.html) in a real headless browser:
Debian's chromium through chromium-driver and selenium, against the real server over the tiny model.
Answers must equal model.chat() on the same inputs (greedy); the keyboard alone sends and stops;
errors show in the page, which keeps working. Screenshots (desktop and phone width) are written to
test-artifacts/ (or $MINICPMV_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_server import MAX, NAME, greedy, running
from test_vision import picture

import minicpmv
from minicpmv.server import create_app

ARTIFACTS = Path(os.environ.get("MINICPMV_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


@pytest.fixture(scope="module")
def model(tiny_gguf_f32, tiny_mmproj_f32):
    return minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, n_ctx=4096)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def replies(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")


def wait_for(driver, condition, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition())


def ask(driver, text):
    """Types the question and sends it with Enter; returns the new reply once it is finished."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = len(replies(driver))
    driver.find_element(By.ID, "question").send_keys(text + Keys.ENTER)
    wait_for(driver, lambda: len(replies(driver)) > before and replies(driver)[-1].get_attribute("data-done"))
    return replies(driver)[-1]


def settings(driver, mode, max_tokens):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    panel = driver.find_element(By.ID, "settings")
    if not panel.get_attribute("open"):
        panel.find_element(By.TAG_NAME, "summary").click()
    Select(driver.find_element(By.ID, "mode")).select_by_value(mode)
    field = driver.find_element(By.ID, "max-tokens")
    field.clear()
    field.send_keys(str(max_tokens))


def test_the_page_chats_about_an_image_as_model_chat_does(browser, model, tmp_path):
    from selenium.webdriver.common.by import By

    with running(create_app(model, NAME, parallel=1, n_threads=1)) as url:
        browser.get(url + "/")
        assert browser.find_element(By.ID, "model-name").text in ("", NAME)
        settings(browser, "greedy", MAX)
        photo = tmp_path / "photo.png"
        picture(300, 200, 5).save(photo)
        browser.find_element(By.ID, "files").send_keys(str(photo))
        wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#pending img"))

        first = ask(browser, "What is in the image?")
        with Image.open(photo) as image:
            msgs = [{"role": "user", "content": [image.convert("RGB"), "What is in the image?"]}]
        expected = greedy(model, msgs)
        assert first.get_attribute("data-raw") == expected
        assert first.get_attribute("data-done") == "1"
        assert "tok/s" in first.find_element(By.CLASS_NAME, "speed").text
        assert first.find_elements(By.CSS_SELECTOR, "img") == []  # the thumbnail is on the question
        assert browser.find_elements(By.CSS_SELECTOR, ".msg.user img")

        second = ask(browser, "And its colours?")
        msgs += [{"role": "assistant", "content": expected}, {"role": "user", "content": "And its colours?"}]
        assert second.get_attribute("data-raw") == greedy(model, msgs)
        # The first turn, its image included, came from the slot's cache.
        cached = re.search(r"\((\d+) cached\)", second.find_element(By.CLASS_NAME, "speed").text)
        assert cached and int(cached.group(1)) > 64, second.find_element(By.CLASS_NAME, "speed").text

        browser.find_element(By.CSS_SELECTOR, "#settings summary").click()  # folded, as a user leaves it
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "web-desktop.png"))
        browser.set_window_size(390, 844)
        try:
            # Phone width: nothing wider than the window, the composer still there.
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            assert browser.find_element(By.ID, "send").is_displayed()
            browser.save_screenshot(str(ARTIFACTS / "web-phone.png"))
        finally:
            browser.set_window_size(1280, 900)


def test_stop_new_chat_and_errors_leave_the_page_working(browser, model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with running(create_app(model, NAME, parallel=1, n_threads=1)) as url:
        browser.get(url + "/")
        settings(browser, "sampling", 3000)
        question = browser.find_element(By.ID, "question")
        question.send_keys("Tell me a long story." + Keys.ENTER)
        wait_for(browser, lambda: len(replies(browser)) == 1 and replies(browser)[0].get_attribute("data-raw"))
        # The keyboard alone: from the question, Tab reaches Attach, then Stop (Send is disabled).
        question.send_keys(Keys.TAB)
        browser.switch_to.active_element.send_keys(Keys.TAB)
        assert browser.switch_to.active_element.get_attribute("id") == "stop"
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        wait_for(browser, lambda: replies(browser)[0].get_attribute("data-done"))
        stopped = replies(browser)[0]
        assert stopped.get_attribute("data-done") == "stopped"
        assert len(model.tokenize(stopped.get_attribute("data-raw"))) < 2000

        browser.find_element(By.ID, "new-chat").click()
        assert replies(browser) == []
        settings(browser, "greedy", MAX)
        notes = tmp_path / "notes.txt"
        notes.write_text("not an image")
        browser.find_element(By.ID, "files").send_keys(str(notes))
        wait_for(browser, lambda: "notes.txt is not an image or a video" in browser.find_element(By.ID, "error").text)
        assert browser.find_elements(By.CSS_SELECTOR, "#pending img") == []

        fake = tmp_path / "fake.png"  # named and typed as an image: the server refuses it
        fake.write_bytes(b"not a png at all")
        browser.find_element(By.ID, "files").send_keys(str(fake))
        wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#pending img"))
        before = len(replies(browser))
        browser.find_element(By.ID, "question").send_keys("What is this?" + Keys.ENTER)
        wait_for(browser, lambda: "not a readable image" in browser.find_element(By.ID, "error").text)
        assert len(replies(browser)) == before  # no empty reply left behind

        answer = ask(browser, "Hello")  # still working, and the error is cleared
        assert answer.get_attribute("data-raw") == greedy(model, [{"role": "user", "content": "Hello"}])
        assert browser.find_element(By.ID, "error").text == ""


def test_answers_render_as_markdown_and_never_as_markup(browser, model):
    with running(create_app(model, NAME, parallel=1, n_threads=1)) as url:
        browser.get(url + "/")
        render = lambda text: browser.execute_script("return markdown(arguments[0])", text)  # noqa: E731
        assert render("**bold** and *it* and `x < y`") == (
            "<p><strong>bold</strong> and <em>it</em> and <code>x &lt; y</code></p>"
        )
        assert render("# Title\n- one\n- two\n1. first") == (
            "<h3>Title</h3><ul><li>one</li><li>two</li></ul><ol><li>first</li></ol>"
        )
        assert render("```python\nprint('<b>')\n```") == "<pre><code>print(&#39;&lt;b&gt;&#39;)\n</code></pre>"
        assert render("[site](https://example.com) [js](javascript:alert(1))") == (
            '<p><a href="https://example.com" rel="noopener noreferrer" target="_blank">site</a> '
            "[js](javascript:alert(1))</p>"
        )
        # What the model writes is text: tags and handlers come out escaped.
        assert "<img" not in render('<img src=x onerror="alert(1)"><script>alert(2)</script>')
