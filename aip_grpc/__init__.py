"""Generated gRPC code for the link and the public session API.

The modules here are produced from ``protos/aip_grpc/*.proto`` by ``make protos`` and are
never edited by hand (nor committed).
"""
