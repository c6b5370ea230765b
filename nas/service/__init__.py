"""edgetpu_models.nas.service: the latency model behind gRPC (`latency.proto`, generated stubs, server, client)."""
