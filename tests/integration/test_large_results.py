"""A screenshot-sized result (5 MB of base64, as reference devices send them inline) goes
from the device through the gateway and the link to the replica, which decodes the frame
once, and comes back whole in ``task_end`` and in the session's command log."""

from __future__ import annotations

import base64
import os

from tests.conftest import StackFactory
from tests.stack import (
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
    wait_for,
)


async def test_a_five_megabyte_result_travels_whole(make_stack: StackFactory) -> None:
    stack = await make_stack()
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await wait_for(lambda: stack.service.presence.get("c1") is not None)
    screenshot = "data:image/png;base64," + base64.b64encode(os.urandom(3_750_000)).decode()
    await constellation.send(task_frame("c1", plan([cmd("screenshot")]),
                                        client_type="constellation", target_id="dev1",
                                        session_id="s-big"))
    command = await device.recv_type("command")
    await device.send(results_for(command, "dev1", result=screenshot))
    end = await constellation.recv_type("task_end", timeout=20)
    assert end["status"] == "completed", end.get("error")
    assert end["result"][0][0]["result"] == screenshot
    # The record (its command log and its result: 10 MB) is past a default gRPC
    # client's 4 MiB limit, so it is read in the replica itself.
    session = stack.service.manager.sessions["s-big"]
    assert session.commands[0].results[0]["result"] == screenshot
    await device.close()
    await constellation.close()
