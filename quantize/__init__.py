"""edgetpu_models.quantize: quantization-aware training (tfmot), post-training quantization and per-layer int8 error
diagnosis for zoo models and NAS outputs."""
