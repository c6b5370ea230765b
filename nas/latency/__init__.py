"""edgetpu_models.nas.latency: predicted latency of a model on a target, without the device.

Target files and their loader (`targets`), the Edge TPU analytical performance model (`apm`), the CPU predictor
(`cpu`), the graph front ends (spec / Keras / .tflite -> layer graph, `frontends`), calibration (`calibrate`) and the
one entry point over all of them (`estimator.estimate`). Importing it does not import TensorFlow.
"""
