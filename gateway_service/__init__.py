"""The AIP gateway: terminates device and constellation WebSockets, owns identities and
the client registry, and forwards tasks and command results to the session service."""
