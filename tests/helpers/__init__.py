"""Shared test helpers: small generated models and datasets, NAS evaluators, crafted adversarial inputs, CLI runs."""
