"""The sample transcript, as sent, laid out by Debian's headless Chromium with the
sample stylesheet unchanged (issue 12, item 6).

Chromium and its driver are Debian's (``chromium``, ``chromium-driver``, installed
by ``contrib/scripts/install-test-packages``, which ``make test`` runs); selenium
is pointed at both, so Selenium Manager never looks for, or downloads, a browser
or a driver. Marked ``servers``: ``make test`` runs it, ``make test-unit`` not.
With ``POSTROOM_UPDATE_SCREENSHOTS=1`` the screenshot replaces
``docs/images/transcript.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from postroom.api import OutboundRequest
from postroom.testing import TestKernel
from tests.conftest import ROOT
from tests.plugins.transcript import samples
from tests.plugins.transcript.samples import DURATION, SHOWN, START, SUBJECT

pytestmark = pytest.mark.servers

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "docs" / "images" / "transcript.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing: run contrib/scripts/install-test-packages as root")
    # selenium imported here: only this test needs it
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=800,1400"):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download anything
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def sent_html() -> str:
    """The HTML part the plugin sends for the sample template and chat."""
    request = OutboundRequest(
        to=["juergen.mueller@customer.example"],
        from_addr="support@centre.example",
        subject="Your chat with us",
        html=samples.template(),
        options={"transcript": {"xml": samples.xml()}},
    )
    with TestKernel(["transcript"]) as kernel:
        assert kernel.send(request).status == "Sent"
        [sent] = kernel.sender.sent
    message: EmailMessage = sent.message
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_the_sample_transcript_laid_out_in_chromium(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    page = tmp_path / "transcript.html"
    page.write_text(f'<!DOCTYPE html><meta charset="utf-8">{sent_html()}', encoding="utf-8")
    browser.get(page.as_uri())

    transcript = browser.find_element(By.CSS_SELECTOR, ".transcript.cx-theme")
    left = transcript.rect["x"]
    right = left + transcript.rect["width"]
    messages = browser.find_elements(By.CSS_SELECTOR, ".transcript .message")
    assert len(messages) == len(SHOWN)

    for element, (side, name, time, text) in zip(messages, SHOWN, strict=True):
        assert side in element.get_attribute("class").split()
        shown_time = element.find_element(By.CSS_SELECTOR, ".time")
        assert shown_time.is_displayed() and shown_time.text == time
        assert element.find_element(By.CSS_SELECTOR, ".message-text").text == text
        if side == "system":  # no name, no avatar, no bubble arrow: a line of italics
            assert not element.find_elements(By.CSS_SELECTOR, ".name, .avatar-wrapper")
            assert (
                element.find_element(By.CSS_SELECTOR, ".message-text").value_of_css_property(
                    "font-style"
                )
                == "italic"
            )
            continue
        shown_name = element.find_element(By.CSS_SELECTOR, ".name")
        assert shown_name.is_displayed() and shown_name.text == name
        bubble = element.find_element(By.CSS_SELECTOR, ".bubble").rect
        avatar = element.find_element(By.CSS_SELECTOR, ".avatar-wrapper").rect
        arrow_left = element.find_element(By.CSS_SELECTOR, ".bubble-arrow .left")
        arrow_right = element.find_element(By.CSS_SELECTOR, ".bubble-arrow .right")
        if side == "you":  # the customer: avatar at the right edge, bubble left of it
            assert avatar["x"] + avatar["width"] >= right - 30
            assert bubble["x"] + bubble["width"] <= avatar["x"] + 5
            assert arrow_right.is_displayed() and not arrow_left.is_displayed()
        else:  # the agent: avatar at the left edge, bubble right of it
            assert avatar["x"] <= left + 30
            assert bubble["x"] >= avatar["x"] + avatar["width"] - 5
            assert arrow_left.is_displayed() and not arrow_right.is_displayed()

    # the customer's texts are on the right of the agent's, and never overlap sides
    you = [m for m, s in zip(messages, SHOWN, strict=True) if s[0] == "you"]
    them = [m for m, s in zip(messages, SHOWN, strict=True) if s[0] == "them"]
    you_avatars = [m.find_element(By.CSS_SELECTOR, ".avatar-wrapper").rect["x"] for m in you]
    them_avatars = [m.find_element(By.CSS_SELECTOR, ".avatar-wrapper").rect["x"] for m in them]
    assert min(you_avatars) > max(them_avatars) + 300
    you_bubbles = [m.find_element(By.CSS_SELECTOR, ".bubble").rect for m in you]
    them_bubbles = [m.find_element(By.CSS_SELECTOR, ".bubble").rect for m in them]
    # the stylesheet's bubbles are blocks, indented on their avatar's side
    assert max(b["x"] for b in you_bubbles) < min(b["x"] for b in them_bubbles) - 40
    assert (
        max(b["x"] + b["width"] for b in you_bubbles)
        < min(b["x"] + b["width"] for b in them_bubbles) - 40
    )

    body = browser.find_element(By.TAG_NAME, "body").text
    for line in (f"Chat started: {START}", f"Duration: {DURATION}", f"Subject: {SUBJECT}"):
        assert line in body
    assert samples.INTERNAL_TEXT not in body and samples.INTERNAL_TIME not in body
    assert "<b>Einen Moment</b>" in body  # shown as typed
    assert not browser.find_elements(By.CSS_SELECTOR, ".transcript b")

    shot = tmp_path / "transcript.png"
    assert browser.find_element(By.TAG_NAME, "body").screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("POSTROOM_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)
