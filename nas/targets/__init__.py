"""Latency targets as data: one YAML file per target (constants, assumptions, calibration results), the calibration
table they are fitted to, the calibration models' layer graphs (precomputed from their int8 .tflite files) and the
trained CPU kernel predictor. Read by `edgetpu_models.nas.latency`; rewritten by `edgetpu-models calibrate`."""
