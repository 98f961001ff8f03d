"""The session-service replicas as the gateway reaches them.

:mod:`.resolver` finds their addresses, :mod:`.transport` keeps one link stream open to
each, :mod:`.pool` holds what the gateway knows of each replica (its load, whether it
drains, the sessions it lost) and places new sessions, and :mod:`.api` calls their public
gRPC API. Only :mod:`.transport` and :mod:`.api` know protobuf.
"""
