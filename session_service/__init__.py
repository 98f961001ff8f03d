"""The session service: owns sessions, their command dispatchers, timeouts, cancellation
and agents, and serves the link for gateways and the public gRPC API for backends."""
