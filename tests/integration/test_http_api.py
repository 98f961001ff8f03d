"""The gateway's HTTP API (``/api``) against a running stack, with ``httpx``."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import StackFactory
from tests.stack import (
    Stack,
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    wait_for,
)


def http(stack: Stack, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.http_url, timeout=10, headers=headers)


async def test_dispatch_runs_on_the_device_and_result_is_readable(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    async with http(stack) as client:
        response = await client.post("/api/dispatch", json={
            "client_id": "dev1", "request": plan([cmd("a")], [cmd("b")]), "task_name": "job-1",
        })
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "dispatched"
        assert body["task_name"] == "job-1"
        session_id = body["session_id"]
        assert isinstance(session_id, str) and session_id

        first = await device.recv_type("command")
        assert first["session_id"] == session_id and first["task_name"] == "job-1"
        assert first["actions"][0]["tool_name"] == "a"
        pending = await client.get("/api/task_result/job-1")
        assert pending.status_code == 200
        assert pending.json()["status"] == "pending"
        assert pending.json()["session_id"] == session_id

        await device.send(results_for(first, "dev1", result="one"))
        [second] = await answer_commands(device, "dev1", 1)
        assert second["actions"][0]["tool_name"] == "b"
        end = await device.recv_type("task_end")
        assert end["status"] == "completed" and end["session_id"] == session_id

        await wait_for(lambda: not stack.gateway.routes)
        done = await client.get("/api/task_result/job-1")
        assert done.status_code == 200
        answer = done.json()
        assert answer["status"] == "done"
        assert answer["session_id"] == session_id
        assert [[r["status"] for r in step] for step in answer["result"]] == [["success"],
                                                                             ["success"]]
        assert answer["result"][0][0]["result"] == "one"
        assert answer["result"] == end["result"]
    await device.close()


async def test_dispatch_accepts_a_json_plan_object_and_a_session_id(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    async with http(stack) as client:
        response = await client.post("/api/dispatch", json={
            "client_id": "dev1", "request": [cmd("x")], "task_name": "obj",
            "session_id": "http-s1",
        })
        assert response.status_code == 200, response.text
        assert response.json()["session_id"] == "http-s1"
        [command] = await answer_commands(device, "dev1", 1)
        assert command["session_id"] == "http-s1"
        assert command["actions"][0]["tool_name"] == "x"
        end = await device.recv_type("task_end")
        assert end["status"] == "completed" and end["session_id"] == "http-s1"
    await device.close()


async def test_failed_task_result_carries_the_error(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    async with http(stack) as client:
        response = await client.post("/api/dispatch", json={
            "client_id": "dev1", "request": "open notepad", "task_name": "nl",
        })
        assert response.status_code == 200, response.text
        end = await device.recv_type("task_end")
        assert end["status"] == "failed"
        await wait_for(lambda: not stack.gateway.routes)
        answer = (await client.get("/api/task_result/nl")).json()
        assert answer["status"] == "done"
        assert answer["error"] and "steps" in answer["error"]
    await device.close()


async def test_unknown_task_is_404(stack: Stack) -> None:
    async with http(stack) as client:
        response = await client.get("/api/task_result/no-such-task")
        assert response.status_code == 404


@pytest.mark.parametrize("name", ["bad name", ".hidden", "a/b", "x;rm", "..", "tab\tname"])
async def test_dispatch_refuses_unsafe_task_names(stack: Stack, name: str) -> None:
    device = await register_device(stack.ws_url, "dev1")
    async with http(stack) as client:
        response = await client.post("/api/dispatch", json={
            "client_id": "dev1", "request": plan([cmd("a")]), "task_name": name,
        })
        assert response.status_code == 400, response.text
    await device.expect_silence(0.2)
    assert not stack.service.manager.sessions
    await device.close()


@pytest.mark.parametrize("name", ["..x", ".hidden", "a b", "a%3Bb"])
async def test_task_result_refuses_unsafe_task_names(stack: Stack, name: str) -> None:
    async with http(stack) as client:
        response = await client.get(f"/api/task_result/{name}")
        assert response.status_code == 400, response.text


async def test_dispatch_to_unknown_client_is_404(stack: Stack) -> None:
    async with http(stack) as client:
        response = await client.post("/api/dispatch", json={
            "client_id": "ghost", "request": plan([cmd("a")]), "task_name": "t",
        })
        assert response.status_code == 404
    assert not stack.service.manager.sessions


async def test_dispatch_to_a_constellation_is_404(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    async with http(stack) as client:
        response = await client.post("/api/dispatch", json={
            "client_id": "c1", "request": plan([cmd("a")]),
        })
        assert response.status_code == 404
    await constellation.close()
    await device.close()


async def test_clients_lists_online_clients(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    async with http(stack) as client:
        body = (await client.get("/api/clients")).json()
        assert sorted(body["online_clients"]) == ["c1", "dev1"]
        kinds = {c["client_id"]: c["client_type"] for c in body["clients"]}
        assert kinds == {"dev1": "device", "c1": "constellation"}
        await constellation.close()
        await wait_for(lambda: stack.gateway.registry.get("c1") is None)
        body = (await client.get("/api/clients")).json()
        assert body["online_clients"] == ["dev1"]
    await device.close()
    await wait_for(lambda: len(stack.gateway.registry) == 0)
    async with http(stack) as client:
        assert (await client.get("/api/clients")).json()["online_clients"] == []


async def test_health_reports_replicas(stack: Stack) -> None:
    async with http(stack) as client:
        response = await client.get("/api/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert len(body["replicas"]) == 1
        replica = body["replicas"][0]
        assert replica["healthy"] is True
        assert replica["address"] == stack.replica.address
        assert replica["replica_id"] == stack.replica.settings.replica_id


async def test_api_key_is_required_when_configured(make_stack: StackFactory) -> None:
    stack = await make_stack(gateway={"api_key": "k"})
    device = await register_device(stack.ws_url, "dev1")
    dispatch = {"client_id": "dev1", "request": plan([cmd("a")]), "task_name": "keyed"}
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"X-API-Key": "kk"}):
        async with http(stack, **headers) as client:
            assert (await client.get("/api/clients")).status_code == 401, headers
            assert (await client.post("/api/dispatch", json=dispatch)).status_code == 401
            assert (await client.get("/api/task_result/keyed")).status_code == 401
            # Health stays open.
            assert (await client.get("/api/health")).status_code == 200
    await device.expect_silence(0.2)
    assert not stack.service.manager.sessions
    async with http(stack, **{"X-API-Key": "k"}) as client:
        assert (await client.get("/api/clients")).json()["online_clients"] == ["dev1"]
        response = await client.post("/api/dispatch", json=dispatch)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "dispatched"
        await answer_commands(device, "dev1", 1)
        await device.recv_type("task_end")
        await wait_for(lambda: not stack.gateway.routes)
        result = await client.get("/api/task_result/keyed")
        assert result.status_code == 200 and result.json()["status"] == "done"
    await device.close()


async def test_dispatch_body_errors_are_4xx(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    async with http(stack) as client:
        missing = await client.post("/api/dispatch", json={"client_id": "dev1"})
        assert missing.status_code == 422
        empty = await client.post("/api/dispatch", json={"client_id": "dev1", "request": "  "})
        assert empty.status_code == 400
        not_json = await client.post("/api/dispatch", content=b"{", headers={
            "content-type": "application/json"})
        assert 400 <= not_json.status_code < 500
    await device.expect_silence(0.2)
    await device.close()


async def test_http_session_ended_by_device_disconnect_is_recorded(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    async with http(stack) as client:
        response = await client.post("/api/dispatch", json={
            "client_id": "dev1", "request": plan([cmd("a")]), "task_name": "gone",
        })
        assert response.status_code == 200
        await device.recv_type("command")
        await device.close()
        await wait_for(lambda: not stack.gateway.routes and len(stack.gateway.registry) == 0)
        answer = (await client.get("/api/task_result/gone")).json()
        assert answer["status"] == "done"
        assert answer["state"] == "cancelled"
        assert "device_disconnected" in answer["error"]
