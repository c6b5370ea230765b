"""The CPU latency targets: per-kernel features, the fitted predictor, LiteRT timing and the fitting procedure."""
