"""The one error hierarchy: every error this package raises on bad input, a missing resource or a failed job is an
`EdgeTPUModelsError` defined here. Library code raises them; only the CLI turns them into one line and an exit code.

Exit codes of `edgetpu-models` (each error class's `exit_code`):
  0    done (`check`: every op maps to the Edge TPU)
  1    the job failed: a file, dataset, spec, export, server or search that could not do what was asked; also `check`
       when the model is not fully mapped to the Edge TPU (its documented status, not an error)
  2    usage: a command line argparse rejects, an unknown zoo model or latency target, flags that do not go together
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class EdgeTPUModelsError(Exception):
    """Base class of every error this package raises on bad input, a missing resource or a failed job."""

    exit_code = EXIT_FAILED


class UsageError(EdgeTPUModelsError, ValueError):
    """Command-line arguments that do not go together, or a value outside what the command accepts."""

    exit_code = EXIT_USAGE


class SpecError(EdgeTPUModelsError, ValueError):
    """An architecture spec file or mapping is malformed. The message names the file, the field and what is allowed."""


class WeightsError(EdgeTPUModelsError, ValueError):
    """A weights file does not fit the model (wrong architecture, shapes, missing tensors) or cannot be fetched."""


class UnknownModelError(EdgeTPUModelsError, KeyError):
    """A zoo name that is not in the zoo, and not a path to a spec file either."""

    exit_code = EXIT_USAGE

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain sentence.
        return str(self.args[0]) if self.args else ""


class ModelFileError(EdgeTPUModelsError, ValueError):
    """A model file (.tflite, .keras, .h5) that is missing, unreadable, or not what the command needs."""


class DatasetError(EdgeTPUModelsError, ValueError):
    """A dataset folder that is missing, empty, has a single class, or holds no readable image."""


class TargetError(EdgeTPUModelsError, KeyError):
    """An unknown latency target, or a target file that is malformed."""

    exit_code = EXIT_USAGE

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrainError(EdgeTPUModelsError, ValueError):
    """A training run that cannot start: bad settings, or a resume that does not match the run folder."""


class ProxyError(EdgeTPUModelsError, ValueError):
    """Bad proxy settings."""


class TrialLogError(EdgeTPUModelsError, ValueError):
    """A trial log that is not a log of this search (unreadable line in the middle, trial recorded twice, ...)."""


class SearchError(EdgeTPUModelsError, ValueError):
    """Bad search settings, or an output folder that holds another search."""


class OneShotError(EdgeTPUModelsError, ValueError):
    """Bad one-shot search settings, or a run folder that cannot be resumed."""


class ChildError(EdgeTPUModelsError, ValueError):
    """A child's weights cannot be sliced (a model that is not this super-network's child)."""


class ControllerError(EdgeTPUModelsError, ValueError):
    """Unknown controller or bad controller setting."""


class SearchSpaceError(EdgeTPUModelsError, ValueError):
    """A search-space file is malformed, or a spec or point is not in the space."""


class RewardError(EdgeTPUModelsError, ValueError):
    """A reward that cannot be computed (unknown kind, non-positive target, bad exponent)."""


class LatencyServerError(EdgeTPUModelsError, RuntimeError):
    """The server could not answer: unreachable after all retries, deadline exceeded, oversized request, refused
    token, or an internal error. `code` is the gRPC status code (None for local problems)."""

    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = code


class ServerError(EdgeTPUModelsError, RuntimeError):
    """The server cannot start: unsafe bind without a token or TLS, port in use, unreadable token or certificate."""


class RequestError(EdgeTPUModelsError, ValueError):
    """An RPC request that is malformed in itself (no model set, options that do not apply to the model kind)."""


class ResponseTooLarge(EdgeTPUModelsError, ValueError):
    """The answer would pass the server's response budget (RESOURCE_EXHAUSTED): send fewer or smaller models."""


class PartitionError(EdgeTPUModelsError, ValueError):
    """The model cannot be cut as asked (too few cut points for N segments, bad N)."""


class CompilerError(EdgeTPUModelsError, RuntimeError):
    """edgetpu_compiler ran but failed, timed out, or printed something we cannot read."""


class ExportError(EdgeTPUModelsError, ValueError):
    """The export cannot produce what was asked (bad options, no calibration data, converter left float ops)."""


class QATError(EdgeTPUModelsError, ValueError):
    """A model tfmot cannot wrap for quantization-aware training (a layer with no quantize config)."""
