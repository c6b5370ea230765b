"""edgetpu_models.nas: accelerator-aware neural architecture search and what it needs.

Three rooms, importing in one direction: `latency` (predicted latency of a model on a target, no device needed) is
used by `search` (the architecture search) and `service` (the latency model behind gRPC for parallel searches).
Importing any of them does not import TensorFlow."""
