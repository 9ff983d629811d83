"""``infership bench``: load generation against an inference server, and its results as data.

- :mod:`.payloads` builds the requests (image upload, OIP JSON, OIP binary tensors, gRPC).
- :mod:`.transport` sends them: HTTP/1.1 over asyncio with httptools, or OIP gRPC.
- :mod:`.loadgen` drives a target in a closed loop (fixed concurrency) or an open loop (fixed
  arrival rate, latency counted from each request's intended send time).
- :mod:`.stats` turns latencies into the summary that :mod:`.report` prints and saves.
"""
