"""What the client-frame parsing tests share."""

from __future__ import annotations

import json

from aip_wire.frames import ClientFrame, parse_client_frame


def parse(obj: object) -> ClientFrame:
    return parse_client_frame(json.dumps(obj))
