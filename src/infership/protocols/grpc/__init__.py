"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``grpc.aio``.

A second adapter over :class:`infership.dataplane.DataPlane`, beside REST: ``codec`` turns
protobuf messages into :mod:`infership.types` and back, ``errors`` maps our errors to status
codes, ``servicer`` answers the rpcs, ``health`` serves ``grpc.health.v1``, and ``server``
binds them to a port.
"""
