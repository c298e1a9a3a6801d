"""The playground page in a real headless Chromium: ask a forget question, compare answers.

Needs Chromium, its driver and selenium (Debian: `apt-get install chromium chromium-driver`;
PyPI: `pip install selenium`, in the test extra). Skipped with that reason when they are
missing, except in CI (CI=true, as .ci/run sets), where a missing browser fails the test: the
only browser check of the playground must not vanish in silence.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from uldkit.models.generation import GenerationSettings, generate_answers
from uldkit.serve.launch import ServerProcess
from uldkit.unlearning.load import load_language_model

CHROMIUM = Path(os.environ.get("ULDKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ULDKIT_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = os.environ.get("ULDKIT_PLAYGROUND_SCREENSHOT")  # save the answered page here

_missing = [what for what, ok in (
    (f"Chromium at {CHROMIUM} (apt-get install chromium)", CHROMIUM.exists()),
    (f"chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver)", CHROMEDRIVER.exists()),
    ("the selenium package (pip install selenium)", importlib.util.find_spec("selenium") is not None),
) if not ok]


@pytest.fixture(scope="session", autouse=True)
def _browser_tools() -> None:
    # Session-wide and autouse, so that it comes before the (session-wide) trained models.
    if not _missing:
        return
    needs = "needs " + "; ".join(_missing)
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true and the playground's browser test {needs}", pytrace=False)
    pytest.skip(needs)


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_playground_shows_original_and_unlearned_answers(trained_world, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    question = trained_world.source.load("forget10").pairs[0].question
    # The target plays the unlearned model; the retain model (never trained on the forget
    # people) plays the "original", so the two answers must differ on a forget question.
    args = ["--model", str(trained_world.target), "--compare-with", str(trained_world.retain),
            "--batch-wait-ms", "20", "--threads", "1"]
    with ServerProcess(args) as server:
        browser.get(server.url + "/")
        assert "uldkit playground" in browser.title
        assert not browser.find_element(By.ID, "panel-original").get_attribute("hidden")
        browser.find_element(By.ID, "question").send_keys(question)
        browser.find_element(By.ID, "ask").click()

        def both_done(driver) -> bool:
            states = [driver.find_element(By.ID, f"panel-{which}").get_attribute("data-state")
                      for which in ("original", "unlearned")]
            assert "error" not in states, [driver.find_element(By.ID, f"answer-{w}").text
                                           for w in ("original", "unlearned")]
            return states == ["done", "done"]

        WebDriverWait(browser, 60).until(both_done)
        original = browser.find_element(By.ID, "answer-original").text
        unlearned = browser.find_element(By.ID, "answer-unlearned").text
        if SCREENSHOT:
            browser.save_screenshot(SCREENSHOT)
        assert browser.find_element(By.ID, "who-original").text == trained_world.retain.name
        assert browser.find_element(By.ID, "who-unlearned").text == trained_world.target.name
    assert original and unlearned
    assert original != unlearned
    # What the page shows is each model's own greedy answer.
    settings = GenerationSettings(max_new_tokens=64)
    for model_dir, shown in ((trained_world.target, unlearned), (trained_world.retain, original)):
        lm = load_language_model(model_dir)
        assert shown == generate_answers(lm, [question], settings)[0]
