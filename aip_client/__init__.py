"""Python client SDK for AIP: a device runtime and a constellation client.

- :class:`DeviceClient` connects a machine as an AIP device and serves commands with a
  :class:`ToolRegistry` of plain Python functions.
- :class:`ConstellationClient` sends devices work and awaits the outcome.

Both speak the frames of ``docs/aip-wire.md`` only, so they work with any compatible
server. Console commands: ``aip-device`` and ``aip-task``.
"""

from aip_client.constellation import (
    ConstellationClient,
    DeviceInfoError,
    TaskHandle,
    TaskRefused,
    TaskResult,
)
from aip_client.device import DeviceClient, RegistrationRefused, backoff_delay
from aip_client.tools import ToolFailure, ToolOutcome, ToolRegistry, builtin_registry, system_info

__all__ = [
    "ConstellationClient",
    "DeviceClient",
    "DeviceInfoError",
    "RegistrationRefused",
    "TaskHandle",
    "TaskRefused",
    "TaskResult",
    "ToolFailure",
    "ToolOutcome",
    "ToolRegistry",
    "backoff_delay",
    "builtin_registry",
    "system_info",
]
