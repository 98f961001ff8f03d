"""The console's translation of session-API messages into what it shows, without a
browser: images found in results, names of enum values this build may not know, and
fields the proto may not have yet."""

from __future__ import annotations

import json

from aip_grpc import session_api_pb2 as pb
from gateway_service.console import views
from gateway_service.console.devices import queued_of, running_of
from gateway_service.console.events import sse
from gateway_service.console.render import render

PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNg=="


def test_images_anywhere_in_a_result_are_taken_out_and_named() -> None:
    value = {
        "shots": [PNG, {"deep": PNG}],
        "text": "hello",
        "svg": "data:image/svg+xml;base64,PHN2Zz4=",
    }
    shown, images = views.split_images(value)
    assert images == [PNG, PNG]
    assert shown["shots"] == ["[image 1]", {"deep": "[image 2]"}]
    assert shown["text"] == "hello"
    # Not an image the page will show (SVG may carry script): its size only.
    assert shown["svg"].startswith("[") and "base64" not in shown["svg"]


def test_a_broken_data_url_is_not_an_image() -> None:
    shown, images = views.split_images('data:image/png;base64,not base64!"><script>')
    assert images == [] and "script" not in shown


def test_unknown_enum_values_show_as_unknown_and_known_ones_by_name() -> None:
    assert views.enum_name(pb.SessionState, "SESSION_STATE_", pb.SESSION_STATE_RUNNING) == (
        "running"
    )
    assert views.enum_name(pb.SessionState, "SESSION_STATE_", 7) == "unknown"
    assert "running" in views.session_states() and "unspecified" not in views.session_states()
    assert views.state_value("cancelled") == pb.SESSION_STATE_CANCELLED
    assert views.state_value("no-such-state") is None


def test_a_session_without_a_queue_position_field_reads_as_not_queued() -> None:
    info = pb.SessionInfo(session_id="s1", state=pb.SESSION_STATE_RUNNING, steps_done=1)
    view = views.session_view(info)
    assert view.queue_position == 0 and view.running and view.created is None


def test_command_results_become_one_view_per_action() -> None:
    actions = json.dumps([{"tool_name": "shot", "parameters": {"x": 1}}])
    results = json.dumps([{"status": "success", "result": {"image": PNG}}])
    command = views.command_view("r1", actions, results, status="answered")
    assert command.actions == [("shot", '{\n  "x": 1\n}')]
    assert command.results[0].images == [PNG]
    html = render("_command.html", c=command)
    assert f'src="{PNG}"' in html and 'id="cmd-r1"' in html


def test_client_text_is_escaped_in_the_html() -> None:
    actions = json.dumps([{"tool_name": "<b>x</b>", "parameters": {}}])
    html = render("_command.html", c=views.command_view("r", actions, "", status="sent"))
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_an_event_keeps_every_line_of_its_data() -> None:
    assert sse("devices", "<tr>\n</tr>") == "event: devices\ndata: <tr>\ndata: </tr>\n\n"


def test_running_sessions_are_counted_apart_from_queued_ones_whatever_the_replica() -> None:
    # A replica that queues counts both in active_sessions and reports them apart...
    queueing = pb.Device(device_id="d", active_sessions=3, running_sessions=1, queued_sessions=2)
    assert (running_of(queueing), queued_of(queueing)) == (1, 2)
    # ...one from before queues has active_sessions alone, all of them running.
    older = pb.Device(device_id="d", active_sessions=2)
    assert (running_of(older), queued_of(older)) == (2, 0)
