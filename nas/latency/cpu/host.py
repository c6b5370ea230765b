"""Which CPU the `cpu` predictor describes, and how it adapts to another one.

A kernel predictor belongs to one device (nn-Meter): the shipped one was fitted on another machine, and on this one
it can be off by a factor of 2 or more either way. So the predictor file records the CPU it was fitted on
(`cpu_fingerprint`: model name, architecture and the SIMD extensions XNNPACK picks kernels by), and on any other CPU
the `cpu` target either

- uses a probe of this CPU (`cpu.probe.run_probe`, `edgetpu-models calibrate --target cpu --probe`): a shipped
  small whole model and one-kernel int8 models are timed with LiteRT, no TensorFlow and no conversion (about 2
  seconds), and the predictor's kernel times are scaled by the whole model's ratio of measured to predicted time; the
  probe is written to the user's config folder beside the user's targets, per CPU; or
- refuses with one line that says the CPU is uncalibrated and how to calibrate it (`host_scale`).

A probe corrects the CPU's overall speed, not the relative cost of kernel types (only the full calibration does that);
benchmarks/latency.py prints how good the probed predictor is on the held-out architectures.
"""

from __future__ import annotations

import json
import os
import platform
from functools import lru_cache
from typing import Any

from edgetpu_models.errors import TargetError

PROBE_MODELS = (("mobilenet_edgetpu", 128), ("efficientnet_edgetpu_s", 128), ("mobilenet_edgetpu_v2_s", 160))
"""(zoo model, resolution) whose kernels the probe times (`cpu.probe.probe_kernel_layers`) and whose time mix weighs
them: the kernel mix the search uses."""
PROBE_SECONDS = 2
"""About how long a probe takes (benchmarks/latency.py --cpu-probe-only measures it), said in the refusal."""
_ISA = ("avx512f", "avx512_vnni", "avx2", "fma", "asimd", "asimddp", "sve")


@lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    """'model name | architecture | SIMD extensions' of this machine's CPU."""
    name, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and name in ("unknown", platform.processor()):
                    name = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
    except OSError:
        pass
    return f"{name} | {platform.machine()} | {','.join(f for f in _ISA if f in flags) or '-'}"


def probe_path() -> str:
    from edgetpu_models.nas.latency.targets import user_targets_dir

    return os.path.join(user_targets_dir(), "cpu_probe.json")


def read_probes() -> dict[str, Any]:
    try:
        with open(probe_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def host_scale(meta: dict[str, Any], target_name: str = "cpu") -> float:
    """The factor this CPU's kernel times take over the predictor's: 1 on the CPU it was fitted on, the probe's
    factor on a probed CPU; TargetError (one line: what and how to calibrate) on any other."""
    here = cpu_fingerprint()
    if meta.get("cpu") == here:
        return 1.0
    probe = read_probes().get(here)
    if isinstance(probe, dict) and isinstance(probe.get("scale"), (int, float)) and probe["scale"] > 0:
        return float(probe["scale"])
    raise TargetError(f"{target_name}: uncalibrated for this CPU ({here}; the predictor was fitted on "
                      f"{meta.get('cpu', 'another, unrecorded CPU')}): run `edgetpu-models calibrate --target "
                      f"{target_name} --probe` (about {PROBE_SECONDS} s) or the full `edgetpu-models calibrate "
                      f"--target {target_name}` (tens of minutes)")
