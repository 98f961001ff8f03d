"""The operator console in a real browser: headless Chromium against a real gateway and
session-service replica (:mod:`tests.stack`), with real devices (:class:`DeviceClient`).

Every check is of what the page shows after it loaded once: devices arriving, steps
running and a cancel ending a session appear through the console's event streams, never
through a reload (a marker set in the window before would be gone after one).
Screenshots go to ``$AIP_CONSOLE_SCREENSHOTS`` (a directory) or to the test's tmp path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from aip_client import DeviceClient, ToolRegistry
from aip_grpc import session_api_pb2 as pb
from tests.browser.browser import Browser, require_chromium, start_chromium
from tests.browser.prefix_proxy import PrefixProxy
from tests.conftest import StackFactory
from tests.integration.llm_support import ScriptedModel, answer, llm_settings, tool_call
from tests.stack import Stack, get_session

pytestmark = pytest.mark.timeout(90)

API_KEY = "console-test-key-0123456789"


def png(width: int, height: int) -> bytes:
    """A real PNG of ``width`` x ``height``: a blue-to-green gradient, made by hand."""
    rows = b"".join(
        b"\x00"
        + b"".join(bytes((20, 255 * x // width, 255 - 255 * x // width)) for x in range(width))
        for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Gate:
    """Lets the test decide when a device's ``hold`` tool answers."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


def tools(gate: Gate) -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool()
    def echo(text: str = "hi") -> dict[str, str]:
        return {"echo": text}

    @registry.tool()
    async def hold() -> str:
        gate.entered.set()
        await gate.release.wait()
        return "released"

    @registry.tool(tool_type="data_collection")
    def screenshot() -> dict[str, Any]:
        encoded = base64.b64encode(png(160, 90)).decode()
        return {"width": 160, "height": 90, "image": f"data:image/png;base64,{encoded}"}

    return registry


def shots_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("AIP_CONSOLE_SCREENSHOTS") or tmp_path)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def browser(chromium: Any) -> AsyncIterator[Browser]:
    page = Browser(chromium)
    await asyncio.to_thread(chromium.delete_all_cookies)
    try:
        yield page
    finally:
        # Off the page first: its event streams end with it, before the stack stops.
        await page.get("about:blank")


@pytest.fixture
def gate() -> Gate:
    return Gate()


async def device(stack: Stack, client_id: str, gate: Gate) -> DeviceClient:
    client = DeviceClient(stack.ws_url, client_id, tools(gate), backoff_min=0.05, backoff_max=0.5)
    await client.start()
    return client


async def mark_window(browser: Browser) -> None:
    await browser.script("window.consoleTestMarker = 'loaded once';")


async def assert_not_reloaded(browser: Browser) -> None:
    assert await browser.script("return window.consoleTestMarker;") == "loaded once"


async def start_from_page(browser: Browser, device_id: str, plan: Any) -> str:
    """Fill the start form on the overview and submit; returns the new session's id.

    ``plan``: JSON-able, or the text as it is (a task in words)."""
    await browser.wait(
        lambda: browser.driver.find_elements(
            By.CSS_SELECTOR, f'#start-device option[value="{device_id}"]'
        ),
        "device in the form",
    )

    def choose() -> bool:
        # The live list replaces the options while we pick: a stale option means pick again.
        select = Select(browser.driver.find_element(By.ID, "start-device"))
        select.select_by_value(device_id)
        return select.first_selected_option.get_attribute("value") == device_id

    await browser.wait(choose, "device chosen in the form")
    text = plan if isinstance(plan, str) else json.dumps(plan)
    await browser.script("document.getElementById('start-request').value = arguments[0];", text)
    await browser.click("#start-submit")
    await browser.wait(lambda: "/sessions/" in browser.driver.current_url, "session page")
    session_id: str = await browser.script(
        "return document.getElementById('session').dataset.session;"
    )
    return session_id


async def test_a_device_appears_without_a_reload(
    stack: Stack, browser: Browser, gate: Gate, tmp_path: Path
) -> None:
    await browser.get(stack.http_url + "/")
    await browser.wait_text("#devices", "No device is connected")
    await mark_window(browser)
    client = await device(stack, "laptop-live", gate)
    try:
        await browser.wait_text("#devices tr[data-device='laptop-live']", "laptop-live")
        row = await browser.text("#devices tr[data-device='laptop-live']")
        assert stack.gateway.gateway_id in row
        await assert_not_reloaded(browser)
        await browser.screenshot(shots_dir(tmp_path) / "console-devices.png")
        await client.stop()
        await browser.wait(
            lambda: (
                not browser.driver.find_elements(
                    By.CSS_SELECTOR, "#devices tr[data-device='laptop-live']"
                )
            ),
            "device gone",
        )
        await assert_not_reloaded(browser)
    finally:
        await client.stop()


async def test_a_session_started_from_the_page_shows_its_steps_live(
    stack: Stack, browser: Browser, gate: Gate
) -> None:
    client = await device(stack, "laptop-steps", gate)
    try:
        await browser.get(stack.http_url + "/")
        plan = {
            "steps": [
                [{"tool_name": "echo", "parameters": {"text": "first step"}}],
                [{"tool_name": "hold", "parameters": {}}],
            ]
        }
        session_id = await start_from_page(browser, "laptop-steps", plan)
        await mark_window(browser)
        async with asyncio.timeout(15):
            await gate.entered.wait()
        # The first step answered and the second sent, while the session runs.
        await browser.wait_text("#commands li.status-answered", "first step")
        await browser.wait_text("#commands li.status-sent", "hold")
        assert await browser.text("#session-state") == "running"
        assert await browser.text("#session-steps") == "1/2"
        gate.release.set()
        await browser.wait_text("#session-state", "completed")
        await browser.wait_text("#commands li.status-answered", "released")
        assert await browser.text("#session-steps") == "2/2"
        await assert_not_reloaded(browser)
        info = await get_session(stack.replica.address, session_id)
        assert info.state == pb.SESSION_STATE_COMPLETED
        assert info.requester_id == "console"
        # The overview lists it, and the search finds it by its device.
        await browser.get(stack.http_url + "/?q=laptop-steps")
        await browser.wait_text("#sessions", session_id)
        await browser.type("#filter-q", "no-such-session-anywhere")
        await browser.wait_text("#sessions", "No sessions.")
    finally:
        gate.release.set()
        await client.stop()


async def test_a_png_in_a_result_shows_as_an_image(
    stack: Stack, browser: Browser, gate: Gate, tmp_path: Path
) -> None:
    client = await device(stack, "laptop-screen", gate)
    try:
        await browser.get(stack.http_url + "/")
        plan = [
            {"tool_name": "screenshot", "parameters": {}},
            {"tool_name": "echo", "parameters": {"text": "after the picture"}},
        ]
        await start_from_page(browser, "laptop-screen", plan)
        await browser.wait_text("#session-state", "completed")
        # Found and measured in one look: an update of the log may swap the element
        # between two calls.
        size = await browser.wait(
            lambda: browser.driver.execute_script(
                "const img = document.querySelector('#commands img.shot');"
                "return img && img.complete && [img.naturalWidth, img.naturalHeight];"),
            "a decoded image in the command log",
        )
        assert size == [160, 90]  # the browser decoded the PNG the device sent
        # The JSON around it shows, the image's text does not.
        result_text = await browser.text("#commands li")
        assert '"width": 160' in result_text and "base64" not in result_text
        shots = shots_dir(tmp_path)
        await browser.script("document.querySelector('#commands img.shot')"
                             ".scrollIntoView({block: 'center'});")
        await browser.screenshot(shots / "console-session.png")
        await browser.get(stack.http_url + "/")
        await browser.wait_text("#sessions", "completed")
        await browser.screenshot(shots / "console.png")
    finally:
        await client.stop()


async def test_cancel_from_the_page_ends_the_session(
    stack: Stack, browser: Browser, gate: Gate
) -> None:
    client = await device(stack, "laptop-cancel", gate)
    try:
        await browser.get(stack.http_url + "/")
        session_id = await start_from_page(
            browser, "laptop-cancel", [{"tool_name": "hold", "parameters": {}}]
        )
        await mark_window(browser)
        async with asyncio.timeout(15):
            await gate.entered.wait()
        await browser.wait_text("#commands li.status-sent", "hold")
        await browser.click("#cancel")
        await browser.wait_text("#session-state", "cancelled")
        # The final log says what became of the command that was waiting.
        await browser.wait_text("#commands li", "unanswered")
        await assert_not_reloaded(browser)
        info = await get_session(stack.replica.address, session_id)
        assert info.state == pb.SESSION_STATE_CANCELLED
        assert not await browser.find("#cancel")
    finally:
        gate.release.set()
        await client.stop()


async def test_with_an_api_key_only_the_login_shows_until_the_key_is_given(
    make_stack: StackFactory, browser: Browser, gate: Gate
) -> None:
    stack = await make_stack(gateway={"api_key": API_KEY})
    client = await device(stack, "laptop-secret", gate)
    try:
        async with httpx.AsyncClient(base_url=stack.http_url, timeout=5) as http:
            for path in (
                "/console/api/devices",
                "/console/api/sessions",
                "/console/events",
                "/console/sessions/x/events",
            ):
                assert (await http.get(path)).status_code == 401, path
            started = await http.post(
                "/console/api/sessions", json={"device_id": "laptop-secret", "request": "[]"}
            )
            assert started.status_code == 401
            assert (await http.post("/console/api/sessions/x/cancel")).status_code == 401
            page = await http.get("/")
            assert "laptop-secret" not in page.text and 'id="login-form"' in page.text
            http.cookies.set("aip_console_key", "not-the-key")
            assert (await http.get("/console/api/devices")).status_code == 401
            http.cookies.set("aip_console_key", API_KEY)
            assert (await http.get("/console/api/devices")).status_code == 200

        await browser.get(stack.http_url + "/")
        await browser.wait(lambda: browser.driver.find_elements(By.ID, "login-form"), "login")
        assert not await browser.find("#devices")
        assert "laptop-secret" not in browser.driver.page_source
        await browser.type("#login-key", "not-the-key")
        await browser.click("#login-submit")
        await browser.wait_text("#login-error", "not the API key")
        assert not await browser.find("#devices")

        await browser.type("#login-key", API_KEY)
        await browser.click("#login-submit")
        await browser.wait_text("#devices tr[data-device='laptop-secret']", "laptop-secret")
        cookie = await asyncio.to_thread(browser.driver.get_cookie, "aip_console_key")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert await browser.script("return document.cookie;") == ""  # not for scripts
        # The live stream is allowed too: a session started elsewhere shows up.
        async with httpx.AsyncClient(
            base_url=stack.http_url, timeout=5, headers={"X-API-Key": API_KEY}
        ) as http:
            started = await http.post(
                "/console/api/sessions",
                json={
                    "device_id": "laptop-secret",
                    "request": json.dumps([{"tool_name": "echo", "parameters": {}}]),
                },
            )
            assert started.status_code == 200, started.text
        await browser.wait_text("#sessions", started.json()["session_id"])

        await browser.click("header form button")  # log out
        await browser.wait(
            lambda: browser.driver.find_elements(By.ID, "login-form"), "login after logout"
        )
        assert await asyncio.to_thread(browser.driver.get_cookie, "aip_console_key") is None
    finally:
        await client.stop()


async def test_api_docs_load_without_the_network(stack: Stack, browser: Browser) -> None:
    await browser.get(stack.http_url + "/docs")
    # Swagger UI ran (its script is served by the gateway) and read the schema.
    await browser.wait_text("#swagger-ui", "/api/dispatch", timeout=20)
    sources = await browser.script(
        "return [...document.querySelectorAll('script[src], link[href]')]"
        ".map(e => e.src || e.href);"
    )
    assert sources and all(src.startswith(stack.http_url) for src in sources), sources


async def test_the_console_works_under_a_proxy_path_prefix(
    make_stack: StackFactory, browser: Browser, gate: Gate
) -> None:
    stack = await make_stack(gateway={"api_key": API_KEY})
    proxy = PrefixProxy(stack.http_url, "/ops")
    await proxy.start()
    client = await device(stack, "laptop-proxied", gate)
    try:
        await browser.get(proxy.url)
        await browser.type("#login-key", API_KEY)
        await browser.click("#login-submit")
        await browser.wait_text("#devices tr[data-device='laptop-proxied']", "laptop-proxied")
        assert browser.driver.current_url == proxy.url
        # The cookie is scoped to the prefix, where the login form was.
        cookie = await asyncio.to_thread(browser.driver.get_cookie, "aip_console_key")
        assert cookie is not None and cookie["path"] == "/ops"
        session_id = await start_from_page(
            browser, "laptop-proxied", [{"tool_name": "echo", "parameters": {"text": "via"}}]
        )
        assert browser.driver.current_url.startswith(proxy.url + "sessions/")
        await browser.wait_text("#session-state", "completed")
        await browser.wait_text("#commands li.status-answered", "via")
        await browser.click("main p a")  # back to the overview, still under the prefix
        await browser.wait_text("#sessions", session_id)
        assert browser.driver.current_url == proxy.url
        # Every asset came through the proxy, none from the gateway's own root.
        loaded = await browser.script(
            "return performance.getEntriesByType('resource').map(e => e.name);"
        )
        assert loaded and all(url.startswith(proxy.url) for url in loaded), loaded
        # So do the API docs, schema included.
        await browser.get(proxy.url + "docs")
        await browser.wait_text("#swagger-ui", "/api/dispatch", timeout=20)
    finally:
        await browser.get("about:blank")
        await client.stop()
        await proxy.stop()


async def test_the_llm_agents_turns_show_with_its_commands(
    make_stack: StackFactory, browser: Browser, gate: Gate, tmp_path: Path
) -> None:
    script = [tool_call("screenshot", {}), answer("The screen shows a gradient.")]
    async with ScriptedModel(script) as model:
        stack = await make_stack(session=llm_settings(model))
        client = await device(stack, "laptop-llm", gate)
        try:
            await browser.get(stack.http_url + "/")
            await browser.click("#start-form input[value='task']")
            session_id = await start_from_page(browser, "laptop-llm", "describe the screen")
            await browser.wait_text("#session-state", "completed")
            await browser.wait_text("#turns li", "The screen shows a gradient.")
            turns = await browser.find("#turns li.turn")
            assert len(turns) == 2
            assert "chose screenshot" in await asyncio.to_thread(lambda: turns[0].text)
            # The command log has the tool listing, then the tool the model chose, whose
            # PNG shows as an image.
            await browser.wait_text("#commands li", "list_tools")
            await browser.wait(
                lambda: browser.driver.find_elements(By.CSS_SELECTOR, "#commands img.shot"),
                "the screenshot in the command log",
            )
            await browser.screenshot(shots_dir(tmp_path) / "console-llm.png")
            info = await get_session(stack.replica.address, session_id)
            assert info.agent == "llm" and len(info.turns) == 2
        finally:
            await client.stop()


async def test_a_queued_session_shows_its_place_then_runs_live(
    stack: Stack, browser: Browser, gate: Gate
) -> None:
    client = await device(stack, "laptop-queue", gate)
    try:
        async with httpx.AsyncClient(base_url=stack.http_url, timeout=5) as http:

            async def start(plan: Any) -> dict[str, str]:
                answer = await http.post(
                    "/console/api/sessions",
                    json={"device_id": "laptop-queue", "request": json.dumps(plan)},
                )
                assert answer.status_code == 200, answer.text
                started: dict[str, str] = answer.json()
                return started

            first = await start([{"tool_name": "hold", "parameters": {}}])
            async with asyncio.timeout(15):
                await gate.entered.wait()
            second = await start([{"tool_name": "echo", "parameters": {"text": "my turn"}}])
        assert first["state"] == "running" and second["state"] == "queued"
        await browser.get(stack.http_url + "/")
        await browser.wait_text(f"#sessions tr[data-session='{second['session_id']}']", "queued #1")
        running = await browser.text("#devices tr[data-device='laptop-queue'] td.running")
        queued = await browser.text("#devices tr[data-device='laptop-queue'] td.queued")
        assert (running, queued) == ("1", "1")

        await browser.get(f"{stack.http_url}/sessions/{second['session_id']}")
        await mark_window(browser)
        await browser.wait_text("#session-state", "queued")
        await browser.wait_text("#head", "#1 in the queue")
        gate.release.set()
        await browser.wait_text("#session-state", "completed")
        await browser.wait_text("#commands li.status-answered", "my turn")
        await assert_not_reloaded(browser)
    finally:
        gate.release.set()
        await client.stop()
