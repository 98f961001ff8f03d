"""The whole fleet as one MCP server: ``/mcp`` on the gateway (Streamable HTTP).

MCP clients (IDEs, desktop chat apps, agent frameworks) list the fleet's devices,
read what each reported about itself, list a device's own tools and call them, or run
a whole task, through the session service's public API like any other backend. The
package is split by purpose: ``endpoint`` (HTTP, credentials, the SDK's session
manager), ``server`` (the MCP handlers), ``fleet`` (the session API calls), and pure
rules in ``access``, ``arguments``, ``catalog``, ``content``, ``outcomes``,
``progress``, ``resources``; ``changes`` tells listening clients when devices come
and go.
"""

from gateway_service.mcp.endpoint import PATH, McpEndpoint

__all__ = ["PATH", "McpEndpoint"]
