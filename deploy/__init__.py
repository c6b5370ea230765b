"""edgetpu_models.deploy: int8 TFLite export, Edge TPU compatibility check and compilation, and inference on the
Edge TPU (pycoral) or the CPU (LiteRT)."""
