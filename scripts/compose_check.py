"""Drive the compose deployment from outside: tasks through the gateway's published port,
one session replica killed mid-task, failover checked; then a backend's calls through the
balancer's published gRPC address, reaching several replicas, and the credentials'
separation checked there.

Usage: python scripts/compose_check.py --url ws://127.0.0.1:8000/ws --api 127.0.0.1:50050
--api-token-file ENV_FILE --kill CMD --restart CMD where the commands (shell words in one
argument) kill one session replica, run when three tasks are in flight, one per replica,
and start it again; ENV_FILE holds AIP_API_TOKEN= and AIP_LINK_TOKEN= lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import websockets

# The generated gRPC modules live at the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aip_grpc import link_pb2, link_pb2_grpc, session_api_pb2_grpc
from aip_grpc import session_api_pb2 as pb


def log(message: str) -> None:
    print(f"[compose-check] {message}", flush=True)


async def recv(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def recv_type(ws: Any, frame_type: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next frame of ``frame_type``; others (task_ends of earlier tasks) are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await recv(ws, max(0.01, deadline - time.monotonic()))
        if frame["type"] == frame_type:
            return frame


async def register(url: str, client_id: str, client_type: str, target: str | None = None) -> Any:
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"type": "register", "client_type": client_type,
                              "client_id": client_id, "target_id": target, "status": "ok",
                              "metadata": {"platform": "linux"}}))
    confirmation = await recv(ws)
    assert confirmation["type"] == "heartbeat" and confirmation["status"] == "ok", confirmation
    return ws


def health(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http}/api/health", timeout=5) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


async def wait_replicas(http: str, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            replicas = [r for r in health(http)["replicas"] if r["healthy"]]
            if len(replicas) >= count:
                log(f"gateway linked to {len(replicas)} replicas")
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the gateway did not link to {count} replicas in {timeout}s")
        await asyncio.sleep(0.5)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill", required=True, help="command killing one replica")
    parser.add_argument("--restart", required=True, help="command restarting it")
    parser.add_argument("--api", required=True, help="published address of the gRPC API")
    parser.add_argument("--api-token-file", type=Path, required=True,
                        help="env file with AIP_API_TOKEN= and AIP_LINK_TOKEN=")
    args = parser.parse_args()
    http = args.url.replace("ws://", "http://").rsplit("/ws", 1)[0]
    await wait_replicas(http, args.replicas)

    device = await register(args.url, "compose-dev", "device")
    constellation = await register(args.url, "compose-c", "constellation", "compose-dev")
    step = {"tool_name": "wait", "parameters": {}, "tool_type": "action"}
    sessions = [f"compose-c@t-{n}" for n in range(args.replicas)]
    for session_id in sessions:
        await constellation.send(json.dumps({
            "type": "task", "client_type": "constellation", "client_id": "compose-c",
            "target_id": "compose-dev", "session_id": session_id, "task_name": session_id,
            "request": json.dumps({"steps": [[step], [step]]}),
        }))
        ack = await recv(constellation)
        assert ack["type"] == "heartbeat" and ack["session_id"] == session_id, ack
    # Each session sent its first command; the device holds them unanswered.
    pending = {}
    for _ in sessions:
        command = await recv(device)
        assert command["type"] == "command", command
        pending[command["session_id"]] = command
    spread = [r["active_sessions"] for r in health(http)["replicas"]]
    log(f"three tasks in flight, active sessions per replica: {spread}")

    log(f"killing one replica: {args.kill}")
    killed_at = time.monotonic()
    await run(args.kill)
    end = await recv(constellation, timeout=15)
    took = time.monotonic() - killed_at
    assert end["type"] == "task_end" and end["status"] == "failed", end
    log(f"task_end failed for {end['session_id']} {took:.2f}s after the kill: {end['error']}")
    assert "unreachable" in end["error"] or "lost" in end["error"], end

    # The survivors finish once the device answers.
    survivors = [sid for sid in sessions if sid != end["session_id"]]
    for session_id in survivors:
        command = pending[session_id]
        await device.send(json.dumps(results(command)))
    done: dict[str, str] = {}
    while len(done) < len(survivors):
        frame = await recv(device)
        if frame["type"] == "command":
            await device.send(json.dumps(results(frame)))
        elif frame["type"] == "task_end" and frame["session_id"] in survivors:
            done[frame["session_id"]] = frame["status"]
    assert all(status == "completed" for status in done.values()), done
    log(f"surviving sessions completed: {sorted(done)}")

    await constellation.send(json.dumps({
        "type": "task", "client_type": "constellation", "client_id": "compose-c",
        "target_id": "compose-dev", "session_id": "compose-c@t-after",
        "request": json.dumps([step]),
    }))
    ack = await recv_type(constellation, "heartbeat")
    assert ack["session_id"] == "compose-c@t-after", ack
    await device.send(json.dumps(results(await recv_type(device, "command"))))
    frame = await recv_type(constellation, "task_end")
    assert frame["status"] == "completed" and frame["session_id"] == "compose-c@t-after", frame
    log("a new task after the failover completed")

    log(f"restarting the replica: {args.restart}")
    await run(args.restart)
    await wait_replicas(http, args.replicas)
    for n in range(args.replicas):
        await constellation.send(json.dumps({
            "type": "task", "client_type": "constellation", "client_id": "compose-c",
            "target_id": "compose-dev", "session_id": f"compose-c@t-again-{n}",
            "request": json.dumps([step]),
        }))
        await recv_type(constellation, "heartbeat")
    commands = [await recv_type(device, "command") for _ in range(args.replicas)]
    spread = [r["active_sessions"] for r in health(http)["replicas"] if r["healthy"]]
    log(f"after the restart, active sessions per replica: {spread}")
    assert sorted(spread) == [1] * args.replicas, spread
    for command in commands:
        await device.send(json.dumps(results(command)))
    ended = 0
    while ended < args.replicas:
        frame = await recv_type(constellation, "task_end")
        assert frame["status"] == "completed", frame
        ended += 1
    log("the restarted replica takes sessions again")
    await backend(args, device)
    await device.close()
    await constellation.close()
    return 0


def tokens(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {key: value for key, _, value in pairs if value}


async def refused(call: Any) -> None:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        return
    raise AssertionError("the call went through")


async def backend(args: argparse.Namespace, device: Any) -> None:
    """A backend on the host: every call on a fresh channel (a fresh connection to the
    balancer, so to the next replica)."""
    secrets = tokens(args.api_token_file)
    api_auth = (("authorization", f"Bearer {secrets['AIP_API_TOKEN']}"),)
    link_auth = (("authorization", f"Bearer {secrets['AIP_LINK_TOKEN']}"),)
    request = json.dumps([{"tool_name": "wait", "parameters": {}, "tool_type": "action"}])
    ran: dict[str, str] = {}
    for n in range(2 * args.replicas):
        async with grpc.aio.insecure_channel(args.api) as channel:
            api = session_api_pb2_grpc.SessionApiStub(channel)
            devices = await api.ListDevices(pb.ListDevicesRequest(), timeout=10,
                                            metadata=api_auth)
            assert "compose-dev" in [d.device_id for d in devices.devices], devices
            info = await api.StartSession(pb.StartSessionRequest(
                device_id="compose-dev", request=request, session_id=f"backend-{n}"),
                timeout=10, metadata=api_auth)
            ran[info.session_id] = info.replica_id
        await device.send(json.dumps(results(await recv_type(device, "command"))))
    replicas = set(ran.values())
    log(f"backend sessions through {args.api} ran on {len(replicas)} replicas: {ran}")
    assert len(replicas) >= 2, ran
    for session_id in ran:
        for _ in range(50):
            async with grpc.aio.insecure_channel(args.api) as channel:
                info = await session_api_pb2_grpc.SessionApiStub(channel).GetSession(
                    pb.GetSessionRequest(session_id=session_id), timeout=10,
                    metadata=api_auth)
            if info.state == pb.SESSION_STATE_COMPLETED:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"backend session {session_id} did not complete: {info}")
    log("backend sessions completed, read back through any replica")
    # Watch and cancel, each on a fresh connection: some reach a replica that does not
    # run the session, which forwards to the one that does.
    for n in range(args.replicas):
        session_id = f"backend-held-{n}"
        async with grpc.aio.insecure_channel(args.api) as channel:
            info = await session_api_pb2_grpc.SessionApiStub(channel).StartSession(
                pb.StartSessionRequest(device_id="compose-dev", request=request,
                                       session_id=session_id),
                timeout=10, metadata=api_auth)
        await recv_type(device, "command")  # left unanswered
        async with grpc.aio.insecure_channel(args.api) as channel:
            stream = session_api_pb2_grpc.SessionApiStub(channel).WatchSession(
                pb.WatchSessionRequest(session_id=session_id), timeout=20,
                metadata=api_auth).__aiter__()
            first = await stream.__anext__()
            assert first.kind == pb.UPDATE_KIND_WATCHING, first
            async with grpc.aio.insecure_channel(args.api) as other:
                cancelled = await session_api_pb2_grpc.SessionApiStub(other).CancelSession(
                    pb.CancelSessionRequest(session_id=session_id), timeout=15,
                    metadata=api_auth)
            assert cancelled.state == pb.SESSION_STATE_CANCELLED, cancelled
            kinds = [update.kind async for update in stream]
            assert kinds and kinds[-1] == pb.UPDATE_KIND_ENDED, kinds
        log(f"{session_id} on {info.replica_id}: watched and cancelled through {args.api}")
    async with grpc.aio.insecure_channel(args.api) as channel:
        api = session_api_pb2_grpc.SessionApiStub(channel)
        await refused(api.ListDevices(pb.ListDevicesRequest(), timeout=10))
        await refused(api.ListDevices(pb.ListDevicesRequest(), timeout=10,
                                      metadata=link_auth))
        call = link_pb2_grpc.GatewayLinkStub(channel).Connect(metadata=api_auth)

        async def hello_then_read() -> None:
            await call.write(link_pb2.GatewayBatch(messages=[link_pb2.GatewayMessage(
                hello=link_pb2.Hello(gateway_id="compose-stranger"))]))
            await call.read()

        # The refusal may end the call before the hello is written: either step fails.
        await refused(hello_then_read())
    log("the API refuses no token and the link token; the link refuses the API token")


async def run(command: str) -> None:
    process = await asyncio.create_subprocess_shell(command, stdout=asyncio.subprocess.DEVNULL)
    if await process.wait() != 0:
        raise SystemExit(f"command failed: {command}")


def results(command: dict[str, Any]) -> dict[str, Any]:
    return {"type": "command_results", "client_id": "compose-dev", "status": "continue",
            "session_id": command["session_id"], "prev_response_id": command["response_id"],
            "action_results": [{"status": "success", "result": None, "call_id": a["call_id"]}
                               for a in command["actions"]]}


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
