"""The accelerator-aware architecture search: controller -> candidate spec -> (proxy accuracy, latency) -> reward.

Trials run in parallel as Ray tasks (a local Ray by default, `address` joins a cluster); Ray re-runs a task whose
worker process dies. The driver writes every proposal and every result to an append-only log (`trials.jsonl`,
fsynced per event). `run_search(..., resume=True)` rebuilds the controller by replaying that log (each replayed
proposal is checked against the logged one), re-dispatches the trials that were in flight when the search died and
continues: after a kill -9, nothing completed is lost and nothing completed is run again.

Results reach the controller in trial order, and trial t is proposed once exactly the results of trials 0 .. t-W are
in (W = workers; the ask event logs that count), so a parallel search proposes the same trials whichever worker
happens to finish first: the same seed and settings give the same search.

Latency comes from the Edge TPU latency model in this process
(`edgetpu_models.nas.latency.estimator.estimate`), from a latency server (`latency_server=ADDR`, same numbers:
the server runs the same model), or, for target `cpu-measured`, from timing the int8 TFLite model on the worker's CPU.
The driver never imports TensorFlow. `SearchRun` is one run of the loop; `run_search` makes and runs one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgetpu_models.errors import EdgeTPUModelsError, SearchError
from edgetpu_models.io_utils import write_text_atomic
from edgetpu_models.nas.search.controllers import CONTROLLERS, make_controller
from edgetpu_models.nas.search.proxy import ProxyConfig
from edgetpu_models.nas.search.results import (
    BEST_SPEC,
    FRONT_DIR,
    PLOT,
    Reference,
    best_result,
    plot_trials,
    write_spec,
    write_summary,
    write_tables,
)
from edgetpu_models.nas.search.reward import Reward
from edgetpu_models.nas.search.space import SearchSpace, arch_key, arch_string, load_space
from edgetpu_models.nas.search.trial_log import TrialLog, TrialLogError, completed_results, read_events
from edgetpu_models.spec import Spec

CONFIG_NAME = "config.json"
SPACE_NAME = "search_space.yaml"

Evaluator = Callable[[Mapping[str, Any], int], Mapping[str, Any]]
"""(spec dict, trial number) -> {"accuracy": float, optionally "latency_ms": float, ...}; must be picklable."""


@dataclass
class SearchConfig:
    """Everything that defines a search; stored as DIR/config.json and reused by `--resume`."""

    target: str = "coral-usb"
    latency_target_ms: float = 5.0
    controller: str = "reinforce"
    trials: int = 50
    seed: int = 0
    reward: str = "mnas-soft"
    alpha: float | None = None
    beta: float | None = None
    space: str | None = None
    """Search-space YAML; None: the shipped default."""
    proxy: dict[str, Any] = field(default_factory=dict)
    """ProxyConfig fields (steps, resolution, width, batch_size, learning_rate, data_dir, ...)."""
    controller_options: dict[str, Any] = field(default_factory=dict)
    latency_server: str | None = None
    latency_auth: dict[str, str] = field(default_factory=dict)
    """Credential files for the latency server (`client_credentials` names: token_file, tls_ca, tls_cert, tls_key);
    paths only, never the token itself."""
    workers: int = 2
    address: str | None = None
    retries: int = 3
    """How often Ray re-runs a trial whose worker process died."""
    cpus_per_trial: float = 1.0
    target_sha256: str | None = None
    """Digest of the latency target file when the search started (set by run_search)."""

    RUNTIME_FIELDS = ("workers", "address", "latency_server", "latency_auth", "retries", "cpus_per_trial")
    """Settings a resumed search may change: where and how it runs, not what it searches."""

    def validate(self) -> None:
        if not isinstance(self.latency_auth, dict) or not set(self.latency_auth) <= {
                "token_file", "tls_ca", "tls_cert", "tls_key"} or not all(
                isinstance(v, str) for v in self.latency_auth.values()):
            raise SearchError("latency_auth: expected file paths under token_file, tls_ca, tls_cert, tls_key")
        if self.controller not in CONTROLLERS:
            raise SearchError(f"controller: expected one of {', '.join(CONTROLLERS)}, got {self.controller!r}")
        if not isinstance(self.trials, int) or self.trials < 1:
            raise SearchError(f"trials: expected an integer >= 1, got {self.trials!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise SearchError(f"workers: expected an integer >= 1, got {self.workers!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise SearchError(f"retries: expected an integer >= 0, got {self.retries!r}")
        Reward.make(self.reward, self.latency_target_ms, self.alpha, self.beta)
        proxy_config(self.proxy)  # bad proxy settings fail here, before anything is written
        from edgetpu_models.nas.latency.estimator import load_target

        load_target(self.target)  # TargetError naming the available targets

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = CONFIG_NAME) -> "SearchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in names]
        if unknown:
            raise SearchError(f"{where}: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass
class SearchResult:
    out_dir: str
    trials: int
    failed: int
    best: dict[str, Any] | None
    best_spec_path: str | None
    front: list[dict[str, Any]]
    plot_path: str | None
    seconds: float
    resumed_from: int = 0
    """Completed trials found in the log when the search started."""


# ----------------------------------------------------------------------------------------------------------------------
# Latency sources (driver side) and the trial task (worker side).

class LatencySource:
    """Latency of a full-size candidate on the target, in the driver: the model in-process or a latency server.

    In-process, the target's constants are read once, when the source is made: a target file recalibrated while a
    search runs does not change the latencies halfway through it.
    """

    def __init__(self, target: str, server: str | None = None, auth: Mapping[str, str] | None = None):
        self.target = target
        self.server = server
        self._client = None
        if server:
            from edgetpu_models.nas.service.client import LatencyClient, client_credentials

            self._client = LatencyClient(server, **client_credentials(**dict(auth or {})))
            self.name = f"server {server}"
        else:
            from edgetpu_models.nas.latency.estimator import load_target

            self._target = load_target(target)  # TargetError naming the available targets
            self.name = "latency model (in-process)"

    def __call__(self, spec: Spec) -> float:
        if self._client is not None:
            return float(self._client.estimate(spec, self.target)["latency_ms"])
        from edgetpu_models.nas.latency.estimator import estimate_graph
        from edgetpu_models.nas.latency.frontends import spec_graph

        return float(estimate_graph(spec_graph(spec), self._target).latency_ms)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def target_file_digest(target: str) -> str | None:
    """sha256 of the target's constants file: a resumed search must cost latencies with the same model."""
    from edgetpu_models.nas.latency.targets import target_path

    path = target_path(target)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_trial(evaluator: Evaluator, spec_dict: Mapping[str, Any], trial: int) -> dict[str, Any]:
    """The body of one Ray task. An exception in the evaluator is a failed trial, not a failed search."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        out = dict(evaluator(spec_dict, trial))
        acc = out.get("accuracy")
        if not isinstance(acc, (int, float)) or not math.isfinite(acc):
            raise ValueError(f"evaluator returned no finite accuracy ({acc!r})")
    except Exception as e:  # noqa: BLE001 - recorded in the log as the trial's error
        out = {"error": f"{type(e).__name__}: {e}"}
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0  # all threads of the worker: what the trial costs on idle cores
    out["worker_pid"] = os.getpid()
    return out


# ----------------------------------------------------------------------------------------------------------------------

def proxy_config(fields: Mapping[str, Any]) -> ProxyConfig:
    """The ProxyConfig a search's `proxy` mapping describes; SearchError/ProxyError naming a bad field."""
    try:
        return ProxyConfig(**fields)
    except TypeError as e:
        raise SearchError(f"proxy: bad setting ({e})") from None


def _default_evaluator(cfg: SearchConfig) -> Evaluator:
    from edgetpu_models.nas.search.proxy import ProxyEvaluator

    pcfg = proxy_config(cfg.proxy)
    return ProxyEvaluator(pcfg, measure_target=cfg.target if _is_measured(cfg.target) else None)


def _is_measured(target: str) -> bool:
    """Targets timed on real hardware (the worker's CPU) rather than predicted from the spec."""
    from edgetpu_models.nas.latency.estimator import load_target

    return load_target(target).kind == "measured"


def _evaluator_name(evaluator: Evaluator) -> str:
    return str(getattr(evaluator, "name", type(evaluator).__name__))


def _read_config(cfg_path: str) -> SearchConfig:
    try:
        with open(cfg_path, encoding="utf-8") as f:
            return SearchConfig.from_dict(json.load(f), cfg_path)
    except (OSError, ValueError) as e:
        raise SearchError(f"{cfg_path}: unreadable search config ({e})") from None


def _prepare_dir(cfg: SearchConfig, out_dir: str, resume: bool) -> tuple[SearchConfig, SearchSpace]:
    cfg_path = os.path.join(out_dir, CONFIG_NAME)
    space_copy = os.path.join(out_dir, SPACE_NAME)
    if resume:
        if not os.path.exists(cfg_path):
            raise SearchError(f"{out_dir}: nothing to resume (no {CONFIG_NAME}; start a search with --out)")
        stored = _read_config(cfg_path)
        for name in SearchConfig.RUNTIME_FIELDS:  # where it runs may change; what it searches may not
            setattr(stored, name, getattr(cfg, name))
        stored.validate()
        if stored.target_sha256 is not None and target_file_digest(stored.target) != stored.target_sha256:
            raise SearchError(f"{out_dir}: the latency target {stored.target!r} changed since this search started "
                              f"(recalibrated?); resuming would mix latencies of two models: start a new search")
        return stored, load_space(space_copy)
    if os.path.exists(cfg_path) or os.path.exists(os.path.join(out_dir, "trials.jsonl")):
        raise SearchError(f"{out_dir}: already holds a search (use --resume to continue it, or another --out)")
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        what = ("a file" if not os.path.isdir(out_dir)
                else f"files that are not a search's (e.g. {sorted(os.listdir(out_dir))[0]})")
        raise SearchError(f"{out_dir}: holds {what}; a new search writes into an empty or new folder")
    cfg.validate()
    cfg.target_sha256 = target_file_digest(cfg.target)
    space = load_space(cfg.space)
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(space.source, space_copy)  # the run keeps its own copy: resume decodes points identically
    write_text_atomic(cfg_path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return cfg, load_space(space_copy)


def _init_ray(cfg: SearchConfig):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray renices its workers to 15 by default; here the trials are the search's foreground work, not background.
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    from edgetpu_models.nas.search.ray_watchdog import bind_to_driver

    common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  ignore_reinit_error=False)
    if ray.is_initialized():
        return ray, False
    if cfg.address:
        try:
            ray.init(address=cfg.address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SearchError(f"--address {cfg.address}: cannot join the Ray cluster "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    else:
        # address="local": always a fresh Ray of our own, never a cluster some `ray start` left on this machine
        ray.init(address="local", num_cpus=max(1, math.ceil(cfg.workers * cfg.cpus_per_trial)), num_gpus=0,
                 object_store_memory=96 * 1024 * 1024, **common)
        bind_to_driver(ray)  # after kill -9 of this process, Ray's head processes end too
    return ray, True


class SearchRun:
    """One run (or resume) of a search into a folder: replay the log, then propose, dispatch and record trials.

    The controller is told results strictly in trial order (`told` counts them), and trial t is proposed once the
    results of trials 0 .. t-W are in (W = workers), so the proposals do not depend on which worker finishes first.
    Settings are checked and the folder prepared when the run is made; `run()` does the work and writes the summary.
    """

    def __init__(self, cfg: SearchConfig, out_dir: str, *, resume: bool = False, evaluator: Evaluator | None = None,
                 progress: bool = False, max_new_trials: int | None = None):
        self.t_start = time.perf_counter()
        self.out_dir = os.path.abspath(out_dir)
        self.cfg, self.space = _prepare_dir(cfg, self.out_dir, resume)
        cfg = self.cfg
        self.reward = Reward.make(cfg.reward, cfg.latency_target_ms, cfg.alpha, cfg.beta)
        self.evaluator = evaluator if evaluator is not None else _default_evaluator(cfg)
        measured = _is_measured(cfg.target) if cfg.latency_server is None else False
        self.latency = None if measured else LatencySource(cfg.target, cfg.latency_server, cfg.latency_auth)
        self.proxy_name = _evaluator_name(self.evaluator)
        self.latency_name = (f"{cfg.target} (int8 TFLite timed on the worker CPU)" if self.latency is None
                             else self.latency.name)
        self.template = self.space.template()
        self.controller = make_controller(cfg.controller, self.space.sizes, cfg.seed, **cfg.controller_options)
        self.progress = progress
        self.max_new_trials = max_new_trials
        self.log = TrialLog(self.out_dir)
        self.points: dict[int, tuple[int, ...]] = {}
        self.results: dict[int, dict[str, Any]] = {}
        self.told = 0
        """Trials 0 .. told-1 have been told to the controller, always in trial order."""
        self.resumed_from = 0
        self.pending: list[int] = []
        """Trials proposed (in the log) but without a result: dispatched again before anything new is proposed."""
        self.cache: dict[str, dict[str, Any]] = {}
        """Architecture key -> an ok result that trained it: a network proposed again is not trained again."""
        self._ray: Any = None
        self._remote: Any = None
        self._evaluator_ref: Any = None
        self._started_ray = False
        self._in_flight: dict[Any, int] = {}

    def run(self) -> SearchResult:
        """Replays the log, runs trials up to the target count, then writes the outputs. Call once."""
        try:
            self._replay()
            self._check_proxy()
            self._plan_after_replay()
            self._run_trials()
        finally:
            self.log.close()
            if self.latency is not None:
                self.latency.close()
        return self._finish()

    # -- the controller, in trial order -------------------------------------------------------------------------------
    def _tell_up_to(self, n: int) -> None:
        while self.told < n:
            self.controller.tell(self.points[self.told], self.results[self.told].get("reward"))
            self.told += 1

    def _can_ask(self) -> bool:
        """Trial t is proposed after exactly the results of trials 0 .. t-W have been told (W = workers): the
        proposals do not depend on which worker finished first, so a parallel search is reproducible too."""
        need = max(self.told, len(self.points) - self.cfg.workers + 1)
        return all(i in self.results for i in range(self.told, need))

    def _has_work(self) -> bool:
        """A trial to dispatch: one left in flight by a killed search, or a new proposal the controller may make."""
        return bool(self.pending) or (len(self.points) < self.cfg.trials and self._can_ask())

    def _spec_of(self, t: int) -> Spec:
        return self.space.decode(self.points[t], template=self.template, name=f"{self.space.name}_trial{t}")

    # -- resume: replay the log ---------------------------------------------------------------------------------------
    def _replay(self) -> None:
        """Rebuilds the controller from the log: it ends in exactly the state it had when the log was written."""
        for ev in self.log.events:
            t = int(ev["trial"])
            if ev["event"] == "ask":
                self._replay_ask(t, ev)
            elif ev["event"] == "result":
                if t not in self.points or t in self.results:
                    raise TrialLogError(f"{self.log.path}: result for trial {t} without a unique proposal")
                self.results[t] = ev
        completed_results(self.log.events)

    def _replay_ask(self, t: int, ev: Mapping[str, Any]) -> None:
        told = ev.get("told")
        if not isinstance(told, int) or any(i not in self.results for i in range(self.told, told)):
            raise TrialLogError(f"{self.log.path}: trial {t}: ask event without a valid 'told' count")
        self._tell_up_to(told)
        p = self.controller.ask()
        if list(p) != list(ev["point"]) or t != len(self.points):
            raise TrialLogError(f"{self.log.path}: trial {t}: the controller replays a different proposal "
                                f"(was the log written by another search config?)")
        self.points[t] = p

    def _check_proxy(self) -> None:
        logged = {r.get("accuracy_proxy") for r in self.results.values() if r.get("cached_from") is None} - {None}
        if logged and logged != {self.proxy_name}:
            raise SearchError(f"{self.out_dir}: the search was run with accuracy proxy {', '.join(sorted(logged))}; "
                              f"resuming it with {self.proxy_name} would mix two objectives")

    def _plan_after_replay(self) -> None:
        self.resumed_from = len(self.results)
        self.pending = [t for t in sorted(self.points) if t not in self.results]
        self.cache = {r["key"]: r for r in self.results.values()
                      if r.get("status") == "ok" and r.get("cached_from") is None}

    # -- the trials ---------------------------------------------------------------------------------------------------
    def _target_trials(self) -> int:
        """How many completed trials this run stops at: all of them, or `max_new_trials` more than it found."""
        if self.max_new_trials is None:
            return self.cfg.trials
        return min(self.cfg.trials, self.resumed_from + self.max_new_trials)

    def _run_trials(self) -> None:
        target = self._target_trials()
        bar = _progress(self.progress, self.cfg, self.resumed_from)
        try:
            while len(self.results) < target:
                self._dispatch(target, bar)
                if not self._in_flight:
                    if not self._has_work():
                        break  # nothing running and nothing to start: done (or max_new_trials reached)
                    continue
                self._collect(bar)
        finally:
            bar.close()
            self._stop_ray()

    def _dispatch(self, target: int, bar: Any) -> None:
        """Starts trials until every worker is busy, `target` is covered, or the controller must wait for results."""
        while (len(self._in_flight) < self.cfg.workers and len(self.results) + len(self._in_flight) < target
               and self._has_work()):
            t = self._next_trial()
            spec = self._spec_of(t)
            hit = self.cache.get(arch_key(spec))
            if hit is not None:  # the same network was already trained: reuse, do not train it again
                self._record(t, {"accuracy": hit["accuracy"], "latency_ms": hit["latency_ms"]}, hit["trial"])
                bar.update(1)
                continue
            self._submit(t, spec)

    def _next_trial(self) -> int:
        """A pending trial of the log first; else the controller proposes the next one (logged before it runs)."""
        if self.pending:
            return self.pending.pop(0)
        t = len(self.points)
        self._tell_up_to(max(self.told, t - self.cfg.workers + 1))
        self.points[t] = self.controller.ask()
        self.log.append({"event": "ask", "trial": t, "point": list(self.points[t]), "told": self.told})
        return t

    def _submit(self, t: int, spec: Spec) -> None:
        if self._remote is None:  # Ray starts with the first trial that must really be trained
            self._ray, self._started_ray = _init_ray(self.cfg)
            self._remote = self._ray.remote(run_trial).options(num_cpus=self.cfg.cpus_per_trial,
                                                               max_retries=self.cfg.retries, retry_exceptions=False)
            self._evaluator_ref = self._ray.put(self.evaluator)
        self._in_flight[self._remote.remote(self._evaluator_ref, spec.to_dict(), t)] = t

    def _collect(self, bar: Any) -> None:
        """Records the trials that finished within half a second."""
        # a short timeout keeps Ctrl-C responsive (a blocking wait defers KeyboardInterrupt to the next result)
        ready, _ = self._ray.wait(list(self._in_flight), num_returns=1, timeout=0.5)
        for ref in ready:
            t = self._in_flight.pop(ref)
            try:
                out = self._ray.get(ref)
            except Exception as e:  # noqa: BLE001 - worker died more often than `retries` allows
                out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            self._record(t, out)
            bar.update(1)
            best = best_result(list(self.results.values()))
            if best is not None:
                bar.set_postfix(best=f"{best['reward']:.4f}", lat=f"{best['latency_ms']:.2f}ms")

    def _stop_ray(self) -> None:
        """Cancels the trials still running (Ctrl-C, an error, max_new_trials) and stops a Ray this run started."""
        if self._in_flight and self._ray is not None:
            for ref in self._in_flight:
                self._ray.cancel(ref, force=True)
        if self._started_ray:
            self._ray.shutdown()

    # -- results ------------------------------------------------------------------------------------------------------
    def _record(self, t: int, out: Mapping[str, Any], cached_from: int | None = None) -> None:
        ev = self._result_event(t, out, cached_from)
        self.log.append(ev)
        self.results[t] = ev
        if ev["status"] == "ok" and cached_from is None:
            self.cache.setdefault(ev["key"], ev)
        _write_outputs(self.out_dir, self.space, self.template, list(self.results.values()))

    def _result_event(self, t: int, out: Mapping[str, Any], cached_from: int | None) -> dict[str, Any]:
        """The log's result event of trial t: the evaluator's output, scored (latency, reward) or failed."""
        spec = self._spec_of(t)
        ev: dict[str, Any] = {"event": "result", "trial": t, "point": list(self.points[t]), "key": arch_key(spec),
                              "arch": arch_string(spec), "accuracy_proxy": self.proxy_name,
                              "latency_source": self.latency_name, "cached_from": cached_from,
                              "seconds": round(float(out.get("seconds", 0.0)), 3)}
        error = out.get("error")
        if error is None:
            error = self._score(ev, spec, out)
        if error is not None:
            ev.update(status="failed", accuracy=None, latency_ms=None, reward=None, error=str(error)[:500])
        for k in ("val_loss", "proxy_params", "train_seconds", "cpu_seconds", "worker_pid"):
            if k in out:
                ev[k] = out[k]
        return ev

    def _score(self, ev: dict[str, Any], spec: Spec, out: Mapping[str, Any]) -> str | None:
        """Adds status ok, accuracy, latency and reward to `ev`; returns the error that prevented it, if any.

        A latency that cannot be had fails the trial; an EdgeTPUModelsError (bad settings) stops the search.
        """
        lat = out.get("latency_ms")
        try:
            if self.latency is not None and lat is None:
                lat = self.latency(spec)
            if lat is None:
                raise ValueError("no latency measured")
            ev.update(status="ok", accuracy=float(out["accuracy"]), latency_ms=float(lat),
                      reward=self.reward(float(out["accuracy"]), float(lat)))
        except EdgeTPUModelsError:
            raise
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}"
        return None

    def _finish(self) -> SearchResult:
        """Writes the tables, plot and summary of every completed trial and returns the result."""
        cfg, all_results = self.cfg, list(self.results.values())
        front = _write_outputs(self.out_dir, self.space, self.template, all_results)
        best = best_result(all_results)
        plot_path = plot_trials(os.path.join(self.out_dir, PLOT), all_results, cfg.latency_target_ms,
                                title=f"{cfg.controller} on {cfg.target}, {len(all_results)} trials "
                                      f"(accuracy: {self.proxy_name})",
                                accuracy_label=f"accuracy ({self.proxy_name})")
        summary = self._summary(all_results, best, front)
        write_summary(self.out_dir, summary)
        return SearchResult(out_dir=self.out_dir, trials=len(all_results), failed=summary["failed"], best=best,
                            best_spec_path=os.path.join(self.out_dir, BEST_SPEC) if best is not None else None,
                            front=front, plot_path=plot_path, seconds=time.perf_counter() - self.t_start,
                            resumed_from=self.resumed_from)

    def _summary(self, all_results: list[dict[str, Any]], best: dict[str, Any] | None,
                 front: list[dict[str, Any]]) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "space": self.space.describe(), "reward": self.reward.describe(),
                "accuracy_proxy": self.proxy_name, "latency_source": self.latency_name, "trials": len(all_results),
                "complete": len(all_results) >= self.cfg.trials,
                "failed": sum(r["status"] != "ok" for r in all_results),
                "best": _brief(best), "front": [_brief(r) for r in front],
                "best_spec": BEST_SPEC if best is not None else None, "plot": PLOT}


def run_search(cfg: SearchConfig, out_dir: str, *, resume: bool = False, evaluator: Evaluator | None = None,
               progress: bool = False, max_new_trials: int | None = None) -> SearchResult:
    """Runs (or resumes) a search into `out_dir`. `evaluator`: None = the proxy trainer from `cfg.proxy`.

    `max_new_trials` stops after that many newly completed trials (the state stays resumable); None runs to
    `cfg.trials`.
    """
    return SearchRun(cfg, out_dir, resume=resume, evaluator=evaluator, progress=progress,
                     max_new_trials=max_new_trials).run()


def _brief(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {k: r.get(k) for k in ("trial", "reward", "accuracy", "latency_ms", "arch", "key")}


def _write_outputs(out_dir: str, space: SearchSpace, template: Spec, results: list[dict[str, Any]]):
    front = write_tables(out_dir, results)
    best = best_result(results)
    if best is not None:
        name = f"{space.name}_best_trial{best['trial']}"
        write_spec(out_dir, space.decode(best["point"], template=template, name=name), BEST_SPEC)
        front_dir = os.path.join(out_dir, FRONT_DIR)
        os.makedirs(front_dir, exist_ok=True)
        keep = {f"trial_{r['trial']:04d}.yaml" for r in front}
        for fname in os.listdir(front_dir):  # a trial that left the front leaves the folder
            if fname.startswith("trial_") and fname.endswith(".yaml") and fname not in keep:
                os.unlink(os.path.join(front_dir, fname))
        for r in front:
            fname = os.path.join(FRONT_DIR, f"trial_{r['trial']:04d}.yaml")
            if not os.path.exists(os.path.join(out_dir, fname)):
                write_spec(out_dir, space.decode(r["point"], template=template,
                                                 name=f"{space.name}_trial{r['trial']}"), fname)
    return front


def _progress(enabled: bool, cfg: SearchConfig, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.trials, initial=initial, desc=f"nas {cfg.controller}", unit="trial", disable=not enabled,
                dynamic_ncols=True)


def load_search(out_dir: str) -> tuple[SearchConfig, list[dict[str, Any]]]:
    """Config and completed results of a search folder (finished or not), for `nas show` and benchmarks."""
    cfg_path = os.path.join(out_dir, CONFIG_NAME)
    if not os.path.exists(cfg_path):
        raise SearchError(f"{out_dir}: not a search folder (no {CONFIG_NAME})")
    return _read_config(cfg_path), completed_results(read_events(os.path.join(out_dir, "trials.jsonl")))


def reference_point(spec: Spec, cfg: SearchConfig, evaluator: Evaluator | None = None, label: str | None = None
                    ) -> Reference:
    """Scores a given spec (e.g. EfficientNet-EdgeTPU-S) exactly as the search scores its candidates."""
    evaluator = evaluator or _default_evaluator(cfg)
    out = run_trial(evaluator, spec.to_dict(), -1)
    if "error" in out:
        raise SearchError(f"{spec.name}: evaluation failed: {out['error']}")
    lat = out.get("latency_ms")
    if lat is None:
        src = LatencySource(cfg.target, cfg.latency_server, cfg.latency_auth)
        try:
            lat = src(spec)
        finally:
            src.close()
    return Reference(label or spec.name, float(lat), float(out["accuracy"]))


__all__ = ["SearchConfig", "SearchResult", "SearchError", "SearchRun", "run_search", "load_search",
           "reference_point", "LatencySource", "run_trial", "target_file_digest"]
