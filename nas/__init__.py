"""edgetpu_models.nas: the Edge TPU latency model (APM), CPU latency prediction and measurement, the latency
estimation server, and the accelerator-aware architecture search. Importing it does not import TensorFlow."""
