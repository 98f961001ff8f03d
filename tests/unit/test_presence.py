"""session_service.presence: which clients are connected on which gateway."""

from __future__ import annotations

from aip_grpc import link_pb2
from aip_link import codec
from aip_link.messages import ClientOnline
from aip_wire.vocab import ClientType
from session_service.presence import ClientRecord, Presence


def rec(client_id: str, gateway_id: str = "gw1", kind: str = "device",
        info: dict | None = None) -> ClientRecord:
    return ClientRecord(client_id=client_id, client_type=ClientType(kind), platform="linux",
                        device_info=info or {}, gateway_id=gateway_id)


def from_proto(presence: link_pb2.ClientPresence) -> ClientRecord:
    """A presence as the link brings it: through the codec, into a record."""
    batch = link_pb2.GatewayBatch(messages=[
        link_pb2.GatewayMessage(client_online=link_pb2.ClientOnline(client=presence))
    ])
    (message,) = codec.decode_gateway_batch(batch)
    assert isinstance(message, ClientOnline)
    return ClientRecord.of(message.client)


def test_online_get_device_devices() -> None:
    presence = Presence()
    dev = rec("dev1")
    con = rec("c1", kind="constellation")
    presence.online(dev)
    presence.online(con)
    assert len(presence) == 2
    assert presence.get("dev1") is dev
    assert presence.get("c1") is con
    assert presence.device("dev1") is dev
    assert presence.device("c1") is None
    assert presence.device("nobody") is None
    assert presence.devices() == [dev]


def test_online_replaces_existing_record() -> None:
    presence = Presence()
    presence.online(rec("dev1", "gw1"))
    newer = rec("dev1", "gw2")
    presence.online(newer)
    assert presence.get("dev1") is newer
    assert len(presence) == 1


def test_offline_removes_client_on_that_gateway() -> None:
    presence = Presence()
    dev = rec("dev1", "gw1")
    presence.online(dev)
    assert presence.offline("dev1", "gw1") is dev
    assert presence.get("dev1") is None
    assert presence.offline("dev1", "gw1") is None


def test_offline_ignores_a_client_that_moved_to_another_gateway() -> None:
    presence = Presence()
    presence.online(rec("dev1", "gw1"))
    moved = rec("dev1", "gw2")
    presence.online(moved)
    assert presence.offline("dev1", "gw1") is None
    assert presence.get("dev1") is moved


def test_replace_gateway_returns_gone_clients() -> None:
    presence = Presence()
    a, b, c = rec("a", "gw1"), rec("b", "gw1"), rec("c", "gw2")
    for record in (a, b, c):
        presence.online(record)
    new_a = rec("a", "gw1", info={"v": 2})
    d = rec("d", "gw1")
    gone = presence.replace_gateway("gw1", [new_a, d])
    assert gone == [b]
    assert presence.get("a") is new_a
    assert presence.get("b") is None
    assert presence.get("c") is c  # other gateway untouched
    assert presence.get("d") is d
    assert len(presence) == 3


def test_replace_gateway_does_not_report_client_that_moved_away() -> None:
    presence = Presence()
    presence.online(rec("dev1", "gw1"))
    presence.online(rec("dev1", "gw2"))  # moved
    assert presence.replace_gateway("gw1", []) == []
    assert presence.get("dev1") is not None
    assert presence.get("dev1").gateway_id == "gw2"


def test_drop_gateway() -> None:
    presence = Presence()
    a, b, c = rec("a", "gw1"), rec("b", "gw1"), rec("c", "gw2")
    for record in (a, b, c):
        presence.online(record)
    gone = presence.drop_gateway("gw1")
    assert sorted(r.client_id for r in gone) == ["a", "b"]
    assert len(presence) == 1
    assert presence.drop_gateway("gw1") == []


def test_update_info_only_for_devices() -> None:
    presence = Presence()
    presence.online(rec("dev1"))
    presence.online(rec("c1", kind="constellation", info={"k": 1}))
    presence.update_info("dev1", {"cpu": 4})
    presence.update_info("c1", {"cpu": 8})
    presence.update_info("ghost", {"cpu": 1})
    assert presence.get("dev1").device_info == {"cpu": 4}
    assert presence.get("c1").device_info == {"k": 1}
    assert presence.get("ghost") is None


def test_record_from_proto() -> None:
    message = link_pb2.ClientPresence(
        client_id="dev1", kind=link_pb2.CLIENT_KIND_DEVICE, platform="linux",
        device_info_json=b'{"os":"Linux"}', gateway_id="gw1",
    )
    assert from_proto(message) == ClientRecord(
        client_id="dev1", client_type=ClientType.DEVICE, platform="linux",
        device_info={"os": "Linux"},
        gateway_id="gw1",
    )


def test_record_from_proto_constellation_and_bad_info() -> None:
    for raw in (b"", b"not json", b"[1,2]", b'"text"'):
        message = link_pb2.ClientPresence(
            client_id="c1", kind=link_pb2.CLIENT_KIND_CONSTELLATION, platform="windows",
            device_info_json=raw, gateway_id="gw1",
        )
        record = from_proto(message)
        assert record.client_type == "constellation"
        assert record.device_info == {}
