"""The session service without its protocols: lifecycle, rules, ports and the manager.

Nothing here imports protobuf or grpc; the adapters next to this package
(``link_servicer``, ``api_servicer``, ``api_views``) translate between it and the wire.
"""
