"""Run segment files (from `edgetpu-models partition` or `edgetpu_compiler --num_segments`) as one model.

With pycoral, libedgetpu and as many Edge TPUs as segments, Coral's PipelinedModelRunner runs them, one segment per
device. Otherwise each segment gets its own CPU interpreter (LiteRT) and, for a stream of inputs, its own thread,
with queues between them: the same structure, so a result equals the whole model's result exactly (the tensors that
cross are the model's own int8 tensors, passed unchanged).

`PipelineInterpreter` has the interpreter methods `classify` and `benchmark` use (get_input_details,
get_output_details, set_tensor, invoke, get_tensor), so a list of segment files runs wherever one file does.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from edgetpu_models.deploy.interpreter import make_interpreter
from edgetpu_models.errors import ModelFileError


def _pycoral_runner(paths: Sequence[str]) -> Any | None:
    """PipelinedModelRunner over one Edge TPU per segment, or None when pycoral or enough devices are missing."""
    try:
        from pycoral.pipeline.pipelined_model_runner import PipelinedModelRunner
        from pycoral.utils import edgetpu
    except Exception:  # not installed, or libedgetpu missing/broken
        return None
    try:
        devices = edgetpu.list_edge_tpus()
    except Exception:  # pragma: no cover - depends on the driver
        return None
    if len(devices) < len(paths):
        return None
    interps = []
    for i, path in enumerate(paths):  # pragma: no cover - needs Edge TPUs
        interp = edgetpu.make_interpreter(path, device=f":{i}")
        interp.allocate_tensors()
        interps.append(interp)
    return PipelinedModelRunner(interps)  # pragma: no cover


class PipelineInterpreter:
    """Segments in order, run one after the other for one input; `run_stream` overlaps them in threads."""

    def __init__(self, paths: Sequence["str | os.PathLike[str]"], threads: int | None = None, *,
                 prefer: str | None = None):
        self.paths = [os.fspath(p) for p in paths]
        if len(self.paths) < 2:
            raise ModelFileError("a pipeline needs at least two segment files")
        self.runner = _pycoral_runner(self.paths) if prefer in (None, "pycoral") else None
        self.interpreters: list[Any] = []
        backends = set()
        if self.runner is None:
            for p in self.paths:
                interp, backend = make_interpreter(p, threads, prefer=prefer if prefer != "pycoral" else None)
                self.interpreters.append(interp)
                backends.add(backend)
            self._check_chain()
        self.backend = (f"pipeline of {len(self.paths)} Edge TPUs (PipelinedModelRunner)" if self.runner is not None
                        else f"pipeline of {len(self.paths)} segments ({', '.join(sorted(backends))}, one thread each)")
        self._input: dict[int, np.ndarray] = {}
        self._output: list[np.ndarray] = []

    def _check_chain(self) -> None:
        for i, (a, b) in enumerate(zip(self.interpreters[:-1], self.interpreters[1:])):
            outs, ins = a.get_output_details(), b.get_input_details()
            if len(outs) != len(ins) or any(tuple(o["shape"]) != tuple(n["shape"]) or o["dtype"] != n["dtype"]
                                            for o, n in zip(outs, ins)):
                raise ModelFileError(f"{self.paths[i + 1]}: its input does not match the output of {self.paths[i]} "
                                     f"(give the segment files in order)")

    # the interpreter interface -------------------------------------------------------------------------------------
    def get_input_details(self) -> list[dict[str, Any]]:
        if self.runner is not None:  # pragma: no cover - needs Edge TPUs
            return self.runner.interpreters()[0].get_input_details()
        return self.interpreters[0].get_input_details()

    def get_output_details(self) -> list[dict[str, Any]]:
        if self.runner is not None:  # pragma: no cover - needs Edge TPUs
            return self.runner.interpreters()[-1].get_output_details()
        return self.interpreters[-1].get_output_details()

    def allocate_tensors(self) -> None:
        return None

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self._input[index] = value

    def invoke(self) -> None:
        details = self.get_input_details()
        x = [self._input[d["index"]] for d in details]
        self._output = next(iter(self.run_stream([x])))

    def get_tensor(self, index: int) -> np.ndarray:
        for d, y in zip(self.get_output_details(), self._output):
            if d["index"] == index:
                return y
        raise ModelFileError(f"pipeline: no output tensor {index}")

    # streaming -------------------------------------------------------------------------------------------------------
    def run_stream(self, inputs: Iterable[Sequence[np.ndarray]]) -> Iterator[list[np.ndarray]]:
        """Results in input order; segment i works on input k while segment i+1 works on input k-1."""
        if self.runner is not None:  # pragma: no cover - needs Edge TPUs
            yield from self._run_pycoral(inputs)
            return
        stages = self.interpreters
        qs: list[queue.Queue] = [queue.Queue(maxsize=4) for _ in range(len(stages) + 1)]
        errors: list[BaseException] = []

        def work(i: int) -> None:
            interp = stages[i]
            ins, outs = interp.get_input_details(), interp.get_output_details()
            while True:
                item = qs[i].get()
                if item is None or errors:
                    qs[i + 1].put(None)
                    return
                try:
                    for d, x in zip(ins, item):
                        interp.set_tensor(d["index"], x)
                    interp.invoke()
                    qs[i + 1].put([interp.get_tensor(d["index"]).copy() for d in outs])
                except BaseException as e:  # handed to the caller's thread
                    errors.append(e)
                    qs[i + 1].put(None)
                    return

        workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(stages))]
        for w in workers:
            w.start()
        feeder = threading.Thread(target=lambda: ([qs[0].put(list(x)) for x in inputs], qs[0].put(None)),
                                  daemon=True)
        feeder.start()
        while True:
            out = qs[-1].get()
            if out is None:
                break
            yield out
        for w in workers:
            w.join()
        if errors:
            raise ModelFileError(f"pipeline: a segment failed ({errors[0]})")

    def _run_pycoral(self, inputs: Iterable[Sequence[np.ndarray]]) -> Iterator[list[np.ndarray]]:  # pragma: no cover
        name = self.get_input_details()[0]["name"]
        out_names = [d["name"] for d in self.get_output_details()]

        def feed() -> None:
            for x in inputs:
                self.runner.push({name: x[0]})
            self.runner.push({})

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        while True:
            result = self.runner.pop()
            if not result:
                break
            yield [result[n] for n in out_names]
        t.join()


_SEGMENT = re.compile(r"^(?P<base>.*)_segment_(?P<i>\d+)_of_(?P<n>\d+)(?P<suffix>_edgetpu)?$")


def check_segment_set(paths: Sequence["str | os.PathLike[str]"]) -> None:
    """A list naming pipeline segment files (`X_segment_I_of_N[_edgetpu].tflite`, Coral's naming) must name all N of
    one model, in order; otherwise one ModelFileError saying which files are wanted (running a part of a pipeline
    would fail deep in the interpreter, or answer with a feature map instead of classes)."""
    names = [os.path.splitext(os.path.basename(os.fspath(p)))[0] for p in paths]
    found = [(p, _SEGMENT.match(n)) for p, n in zip(paths, names)]
    segments = [(p, m) for p, m in found if m is not None]
    if not segments:
        return
    first_path, m = segments[0]
    n, base, suffix = int(m["n"]), m["base"], m["suffix"] or ""
    want = [f"{base}_segment_{i}_of_{n}{suffix}.tflite" for i in range(n)]
    given = [os.path.basename(os.fspath(p)) for p in paths]
    if given != want:
        raise ModelFileError(f"{os.fspath(first_path)}: segment {int(m['i'])} of a {n}-segment pipeline; give the "
                             f"segment files in order, all {n} of them: {' '.join(want)[:300]}")


def open_interpreter(paths: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]", threads: int | None = None, *,
                     prefer: str | None = None) -> tuple[Any, str]:
    """(interpreter, backend) for one .tflite or, given several, for the pipeline of those segment files (all of
    them, in order: `check_segment_set`)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    check_segment_set(paths)
    if len(paths) == 1:
        return make_interpreter(paths[0], threads, prefer=prefer)
    p = PipelineInterpreter(paths, threads, prefer=prefer)
    return p, p.backend
