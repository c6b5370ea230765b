"""Typed errors. Library code raises these; only the CLI turns them into one-line messages and exit codes."""


class EdgeTPUModelsError(Exception):
    """Base class of every error this package raises on bad input or a missing resource."""


class SpecError(EdgeTPUModelsError, ValueError):
    """An architecture spec file or mapping is malformed. The message names the file, the field and what is allowed."""


class WeightsError(EdgeTPUModelsError, ValueError):
    """A weights file does not fit the model (wrong architecture, shapes, missing tensors) or cannot be fetched."""


class UnknownModelError(EdgeTPUModelsError, KeyError):
    """A zoo name that is not in the zoo, and not a path to a spec file either."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain sentence.
        return str(self.args[0]) if self.args else ""


class ModelFileError(EdgeTPUModelsError, ValueError):
    """A model file (.tflite, .keras, .h5) that is missing, unreadable, or not what the command needs."""


class DatasetError(EdgeTPUModelsError, ValueError):
    """A dataset folder that is missing, empty, has a single class, or holds no readable image."""


class TargetError(EdgeTPUModelsError, KeyError):
    """An unknown latency target, or a target file that is malformed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
