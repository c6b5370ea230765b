"""edgetpu_models.nas.service: the latency model behind gRPC (`latency.proto`, the code generated from it, server,
client)."""
