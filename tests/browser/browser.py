"""Headless Chromium for the console's tests, driven by Selenium from asyncio tests.

The services run in the test's event loop (:mod:`tests.stack`), so every WebDriver call,
which blocks until the browser answers, runs in a worker thread: the gateway keeps
serving the page while the test waits for it. Chromium is Debian's (``chromium`` and
``chromium-driver``); it starts with a fresh profile and nothing that phones home, and
Selenium is given both paths so that it never looks for a browser of its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = os.environ.get("AIP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AIP_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)

T = TypeVar("T")


def missing() -> str | None:
    """Why Chromium cannot run here (``None``: it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return (
                f"{path} not found: install Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver)"
            )
    return None


def require_chromium() -> None:
    reason = missing()
    if reason is None:
        return
    if os.environ.get("AIP_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{reason}, and AIP_REQUIRE_CHROMIUM=1")
    pytest.skip(reason)


def start_chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


class Browser:
    """One Chromium window; each method runs the blocking WebDriver calls off the loop."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(func, *args)

    async def get(self, url: str) -> None:
        await self._run(self.driver.get, url)

    async def script(self, source: str, *args: Any) -> Any:
        return await self._run(self.driver.execute_script, source, *args)

    async def find(self, css: str) -> list[WebElement]:
        return await self._run(self.driver.find_elements, By.CSS_SELECTOR, css)

    async def text(self, css: str) -> str:
        """The visible text of the first element matching ``css`` ("" if none)."""

        # Read in one script: live updates swap elements between a find and a read.
        text = await self.script(
            "const found = document.querySelector(arguments[0]);"
            " return found ? found.innerText : '';",
            css,
        )
        return str(text).strip()

    async def wait(self, condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        """Poll ``condition`` (called in a thread) until it returns something true."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                value = await self._run(condition)
            except (StaleElementReferenceException, WebDriverException):
                value = None  # the element was swapped by an update: look again
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"not within {timeout}s: {what}; page text: "
                    f"{self.driver.find_element(By.TAG_NAME, 'body').text}"
                )
            await asyncio.sleep(0.1)

    async def wait_text(self, css: str, text: str, timeout: float = 15.0) -> None:
        def found() -> bool:
            return any(
                text in element.text for element in self.driver.find_elements(By.CSS_SELECTOR, css)
            )

        await self.wait(found, f"{text!r} in {css}", timeout)

    async def type(self, css: str, text: str) -> None:
        def fill() -> None:
            element = self.driver.find_element(By.CSS_SELECTOR, css)
            element.clear()
            element.send_keys(text)

        await self._run(fill)

    async def click(self, css: str) -> None:
        def press() -> bool:
            self.driver.find_element(By.CSS_SELECTOR, css).click()
            return True

        await self.wait(press, f"a click on {css}")

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = await self._run(self.driver.save_screenshot, str(path))
        assert saved, f"no screenshot written to {path}"
