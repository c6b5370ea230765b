"""The latency estimation server: `edgetpu_models.nas.latency` behind gRPC (service in `latency.proto`).

Search workers send candidate specs (or int8 .tflite files) and get the same numbers the in-process estimator gives.
Besides the LatencyEstimator service the server runs the standard gRPC health service and server reflection, so
generic tools (grpcurl, grpc_health_probe) can talk to it.

Status discipline: a malformed spec or .tflite is INVALID_ARGUMENT (the message says what is wrong), an unknown target
or zoo model NOT_FOUND, a request above the configured message size RESOURCE_EXHAUSTED (enforced by gRPC itself),
any call while draining UNAVAILABLE, a missing or wrong token UNAUTHENTICATED. Errors also carry the library error
class in the trailing metadata `edgetpu-error-type`, so `LatencyClient` re-raises the same typed error as in-process
estimation would. An unexpected exception is INTERNAL for that call only: a bad request never takes the server down.

The spec path is TF-free (JSON/YAML text -> `Spec` -> `estimate_spec`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import OrderedDict
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import grpc
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..errors import EdgeTPUModelsError, TargetError, UnknownModelError
from ..spec import Spec, pick_variant, round_repeats, spec_from_dict
from ..zoo import zoo_spec
from . import latency as _latency
from . import latency_pb2, latency_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME: str = latency_pb2.DESCRIPTOR.services_by_name["LatencyEstimator"].full_name
DEFAULT_TARGET = "coral-usb"
DEFAULT_PORT = 50051
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Large enough for an int8 EfficientNet-EdgeTPU-L .tflite (about 11 MB) with room to spare."""
DEFAULT_CACHE_SIZE = 4096
MAX_BLOCKS = 1000
"""Largest spec (blocks after depth scaling) the server estimates; the zoo's largest has 30."""
ERROR_TYPE_KEY = "edgetpu-error-type"
AUTH_KEY = "authorization"

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ServerError(EdgeTPUModelsError, RuntimeError):
    """The server cannot start: unsafe bind without a token or TLS, port in use, unreadable token or certificate."""


class RequestError(EdgeTPUModelsError, ValueError):
    """An RPC request that is malformed in itself (no model set, options that do not apply to the model kind)."""


# ----------------------------------------------------------------------------------------------------------------------
# Request -> estimate -> response

def parse_spec_text(text: str, where: str = "request spec") -> Spec:
    """A spec sent as JSON (what `LatencyClient` sends: fast to parse) or YAML text (what a person sends)."""
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.load(text, Loader=_YamlLoader)  # safe: CSafeLoader / SafeLoader only
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise RequestError(f"{where}: not valid JSON or YAML{at}: {getattr(e, 'problem', e)}") from None
    return spec_from_dict(data, source=where)


def served_targets(measured: bool = False) -> list[str]:
    """The targets a server offers: every latency target, less the measured ones unless `measured`."""
    out = []
    for name in _latency.list_targets():
        try:
            kind = _latency.load_target(name).kind
        except TargetError:  # a broken target file is not offered; asking for it names the problem
            continue
        if measured or kind != "measured":
            out.append(name)
    return out


def check_target(target: str, measured: bool = False) -> Any:
    """The target (`latency.Target`); TargetError for an unknown one, or a measured one (it builds and times a real
    model with TensorFlow on the server host, seconds per call) on a server not started with `measured`."""
    if target not in _latency.list_targets():  # name what this server serves, not every target file
        raise TargetError(f"{target}: unknown latency target (available: {', '.join(served_targets(measured))})")
    t = _latency.load_target(target)
    if t.kind == "measured" and not measured:
        raise TargetError(f"{target}: measured target not served here (it times a real model on the server host); "
                          f"available: {', '.join(served_targets(False))}")
    return t


def check_size(spec: Spec, variant: str | None, where: str, max_blocks: int = MAX_BLOCKS) -> None:
    """A spec's block count after depth scaling, checked before the graph is built: `repeats: 1000000000` must be a
    one-line INVALID_ARGUMENT, not a server that runs out of memory."""
    _, v = pick_variant(spec, variant)
    blocks = sum(round_repeats(st.repeats, v.depth) for st in spec.stages)
    if blocks > max_blocks:
        raise RequestError(f"{where}: stages: {blocks} blocks after depth scaling; this server takes at most "
                           f"{max_blocks}")


def estimate_request(request: latency_pb2.EstimateRequest, where: str = "request",
                     measured: bool = False) -> "_latency.LatencyEstimate":
    """Runs the estimator for one request; raises the library's typed errors (SpecError, ModelFileError, ...)."""
    target = request.target or DEFAULT_TARGET
    check_target(target, measured)
    resolution = request.resolution if request.HasField("resolution") else None
    variant = request.variant if request.HasField("variant") else None
    kind = request.WhichOneof("model")
    if kind is None:
        raise RequestError(f"{where}: no model: set one of spec (YAML/JSON text), tflite (bytes), zoo_model (name)")
    if kind == "tflite":
        if resolution is not None or variant is not None:
            raise RequestError(f"{where}: resolution and variant apply to specs and zoo models, not to a .tflite")
        return _latency.estimate(bytes(request.tflite), target)
    if kind == "zoo_model":
        spec, zoo_variant = zoo_spec(request.zoo_model)
        return _latency.estimate_spec(spec, target, resolution=resolution, variant=variant or zoo_variant)
    spec = parse_spec_text(request.spec, f"{where}.spec")
    check_size(spec, variant, f"{where}.spec")
    return _latency.estimate_spec(spec, target, resolution=resolution, variant=variant)


def to_response(estimate: "_latency.LatencyEstimate") -> latency_pb2.EstimateResponse:
    """The proto twin of `LatencyEstimate.to_dict()` (built from the dict, so both always carry the same fields)."""
    d = estimate.to_dict()
    resp = latency_pb2.EstimateResponse(latency_ms=d["latency_ms"], target=d["target"],
                                        on_chip_param_bytes=d["on_chip_param_bytes"],
                                        off_chip_param_bytes=d["off_chip_param_bytes"])
    for layer in d["layers"]:
        resp.layers.add(name=layer["name"], op=layer["op"], output_shape=list(layer["output_shape"]),
                        macs=layer["macs"], ms=layer["ms"], bound=layer["bound"])
    return resp


class _LRUCache:
    """Bounded cache of responses keyed by a digest of the request's deterministic serialization."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, latency_pb2.EstimateResponse] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: latency_pb2.EstimateRequest, version: str = "") -> bytes:
        """`version` names the state of the target (its file's mtime), so a recalibrated target is not served stale."""
        h = hashlib.blake2b(request.SerializeToString(deterministic=True), digest_size=20)
        h.update(version.encode())
        return h.digest()

    def get(self, key: bytes) -> latency_pb2.EstimateResponse | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: latency_pb2.EstimateResponse) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._data), "maxsize": self.maxsize, "hits": self.hits, "misses": self.misses}


def _status_of(error: EdgeTPUModelsError) -> grpc.StatusCode:
    if isinstance(error, (TargetError, UnknownModelError)):
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.INVALID_ARGUMENT


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an RPC method: UNAVAILABLE while draining, in-flight counting, typed errors -> status codes."""
    @functools.wraps(method)
    def wrapper(self: "LatencyService", request: Any, context: grpc.ServicerContext) -> Any:
        if self.draining.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "latency server is draining (shutting down); retry later")
        with self._idle:
            self._inflight += 1
        try:
            return method(self, request, context)
        except EdgeTPUModelsError as e:
            context.set_trailing_metadata(((ERROR_TYPE_KEY, type(e).__name__),))
            context.abort(_status_of(e), str(e))
        except Exception as e:  # a bad request must never take the server down: fail this call only
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
        finally:
            with self._idle:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.notify_all()

    return wrapper


class LatencyService(latency_pb2_grpc.LatencyEstimatorServicer):
    """The RPC methods. Every call is counted in flight (for draining) and turns errors into status codes."""

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE, measured: bool = False) -> None:
        self.cache = _LRUCache(cache_size)
        self.measured = measured
        self.draining = threading.Event()
        self._inflight = 0
        self._idle = threading.Condition()

    @property
    def inflight(self) -> int:
        with self._idle:
            return self._inflight

    def wait_idle(self, timeout: float | None) -> bool:
        """Waits until no call is in flight; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout=timeout)

    def _estimate_cached(self, request: latency_pb2.EstimateRequest, where: str) -> latency_pb2.EstimateResponse:
        target = check_target(request.target or DEFAULT_TARGET, self.measured)
        try:
            version = f"{target.path}:{os.stat(target.path).st_mtime_ns}"
        except OSError:
            version = ""
        key = self.cache.key(request, version)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        resp = to_response(estimate_request(request, where, self.measured))
        self.cache.put(key, resp)
        return resp


    @_rpc
    def Estimate(self, request: latency_pb2.EstimateRequest,
                 context: grpc.ServicerContext) -> latency_pb2.EstimateResponse:
        return self._estimate_cached(request, "request")

    @_rpc
    def EstimateBatch(self, request: latency_pb2.EstimateBatchRequest,
                      context: grpc.ServicerContext) -> latency_pb2.EstimateBatchResponse:
        results = []
        for i, r in enumerate(request.requests):
            if not context.is_active():  # the client gave up (deadline, cancel): stop spending CPU on it
                context.abort(grpc.StatusCode.CANCELLED, f"EstimateBatch abandoned by the client at requests[{i}]")
            results.append(self._estimate_cached(r, f"requests[{i}]"))
        return latency_pb2.EstimateBatchResponse(results=results)

    @_rpc
    def ListTargets(self, request: latency_pb2.ListTargetsRequest,
                    context: grpc.ServicerContext) -> latency_pb2.ListTargetsResponse:
        return latency_pb2.ListTargetsResponse(targets=served_targets(self.measured))


# ----------------------------------------------------------------------------------------------------------------------
# Token authentication (every call, including health and reflection)

_UNAUTHENTICATED_MSG = f"missing or wrong token: send metadata '{AUTH_KEY}: Bearer TOKEN'"


def _abort_unauthenticated(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED_MSG)


def _deny_like(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as `handler` that rejects the call."""
    args = (_abort_unauthenticated, handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(*args)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(*args)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(*args)
    return grpc.unary_unary_rpc_method_handler(*args)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Accepts a call only with metadata `authorization: Bearer TOKEN` (constant-time comparison)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        got = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == AUTH_KEY:
                got = value if isinstance(value, str) else value.decode("latin-1")
                break
        handler = continuation(handler_call_details)
        if handler is None or hmac.compare_digest(got.encode(), self._expected):
            return handler
        return _deny_like(handler)


def read_token_file(path: str) -> str:
    """The token: the file's first line, stripped. Raises ServerError if missing, unreadable or empty."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ServerError(f"{path}: cannot read token file ({e.strerror if isinstance(e, OSError) else e})") from None
    if not token:
        raise ServerError(f"{path}: token file is empty (expected the token on its first line)")
    return token


# ----------------------------------------------------------------------------------------------------------------------
# The server

def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _hostport(host: str, port: int) -> str:
    h = host.strip("[]")
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    """0 picks a free port (see `LatencyServer.port` after `start()`)."""
    threads: int = 8
    """Threads serving calls in one server process (at most this many calls run at once; the others queue)."""
    reuse_port: bool = False
    """Share the port with sibling worker processes (SO_REUSEPORT); off for a lone server, so a busy port fails."""
    token: str | None = None
    """When set, every call must carry `authorization: Bearer TOKEN`."""
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    """PEM certificate chain and private key: serve TLS instead of plaintext."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    cache_size: int = DEFAULT_CACHE_SIZE
    grace_s: float = 10.0
    """How long a drain waits for in-flight calls before cancelling them."""
    measured: bool = False
    """Serve measured targets too (each call builds, converts and times a model with TensorFlow here)."""


class LatencyServer:
    """One gRPC server. `start()`, then `drain()` (or use it as a context manager)."""

    def __init__(self, config: ServerConfig = ServerConfig()) -> None:
        if config.threads < 1:
            raise ServerError(f"threads: expected an integer >= 1, got {config.threads}")
        if config.max_message_bytes < 1024:
            raise ServerError(f"max message bytes: expected at least 1024, got {config.max_message_bytes}")
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ServerError("TLS needs both a certificate and its private key")
        if not is_loopback(config.host) and not (config.token or config.tls_cert):
            raise ServerError(f"{config.host}: refusing to serve a non-loopback address without a token file or TLS")
        self.config = config
        self.service = LatencyService(config.cache_size, config.measured)
        self.health = health.HealthServicer()
        self._server: grpc.Server | None = None
        self._port: int | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerError("latency server not started")
        return self._port

    @property
    def address(self) -> str:
        return _hostport(self.config.host, self.port)

    def start(self) -> "LatencyServer":
        cfg = self.config
        interceptors = [TokenAuthInterceptor(cfg.token)] if cfg.token else []
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="latency-rpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", cfg.max_message_bytes),
                     ("grpc.max_send_message_length", -1),
                     ("grpc.so_reuseport", int(cfg.reuse_port))])
        latency_pb2_grpc.add_LatencyEstimatorServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        bind = _hostport(cfg.host, cfg.port)
        try:
            if cfg.tls_cert is not None:
                creds = grpc.ssl_server_credentials([(cfg.tls_key, cfg.tls_cert)])
                port = server.add_secure_port(bind, creds)
            else:
                port = server.add_insecure_port(bind)
        except RuntimeError as e:
            raise ServerError(f"{bind}: cannot listen (address in use or not local?): {e}") from None
        if not port:
            raise ServerError(f"{bind}: cannot listen (address in use or not local?)")
        server.start()
        self._server, self._port = server, port
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("latency server listening on %s", self.address)
        return self

    def drain(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: health turns NOT_SERVING and new calls get UNAVAILABLE at once; calls in flight finish
        (up to `grace_s`, default the config's), then the server stops."""
        if self._server is None or self._stopped.is_set():
            return
        grace = self.config.grace_s if grace_s is None else grace_s
        t0 = time.monotonic()
        self.service.draining.set()
        self.health.enter_graceful_shutdown()
        self.service.wait_idle(grace)
        self._server.stop(max(0.0, grace - (time.monotonic() - t0))).wait()
        self._stopped.set()
        log.info("latency server on %s drained and stopped", self.address)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def cache_info(self) -> dict[str, int]:
        return self.service.cache.info()

    def __enter__(self) -> "LatencyServer":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.drain()


@dataclass(frozen=True)
class Serving:
    """What `serve` reports once every worker listens."""

    address: str
    workers: int
    pids: tuple[int, ...]


def _wait_signal(signals: Iterable[int], also: Callable[[], bool] = lambda: False) -> None:
    """Blocks the main thread until one of `signals` arrives (or `also()` turns true); restores the handlers."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in signals}
    try:
        while not stop.wait(0.2) and not also():
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _worker_main(config: ServerConfig, ready: Any) -> None:
    """Entry point of one worker process: serve until SIGTERM from the parent, then drain."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent turns it into SIGTERM
    try:
        server = LatencyServer(config).start()
    except EdgeTPUModelsError as e:
        ready.put(("error", str(e)))
        return
    ready.put(("ready", server.port))
    _wait_signal((signal.SIGTERM,))
    server.drain()


def _reserve_port(host: str, port: int) -> socket.socket:
    """Binds (without listening) a SO_REUSEPORT socket: picks the port for port 0 and keeps it ours while workers
    bind the same port with SO_REUSEPORT; the kernel then spreads connections over the workers."""
    h = host.strip("[]")
    family = socket.AF_INET6 if ":" in h else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: a restart next to TIME_WAITs binds
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((h, port))
    except OSError as e:
        sock.close()
        raise ServerError(f"{_hostport(host, port)}: cannot listen ({e.strerror})") from None
    return sock


def serve(config: ServerConfig, workers: int = 1, *, on_ready: Callable[[Serving], None] | None = None,
          signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Serves until one of `signals` arrives, then drains (calls in flight finish, new ones get UNAVAILABLE).
    Call from the main thread.

    `workers` > 1 runs that many server processes on one port (SO_REUSEPORT): the estimator is pure Python, so
    processes, not threads, are what use several cores. Each worker has its own bounded cache.
    """
    if workers < 1:
        raise ServerError(f"workers: expected an integer >= 1, got {workers}")
    if workers == 1:
        server = LatencyServer(config).start()
        if on_ready is not None:
            on_ready(Serving(server.address, 1, (os.getpid(),)))
        _wait_signal(signals)
        server.drain()
        return
    LatencyServer(config)  # validate the configuration before starting anything
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # gRPC state must not be forked
    reservation = _reserve_port(config.host, config.port)
    procs: list[Any] = []
    try:
        port = reservation.getsockname()[1]
        child_config = dataclasses.replace(config, port=port, reuse_port=True)
        ready = ctx.Queue()
        for i in range(workers):
            p = ctx.Process(target=_worker_main, args=(child_config, ready), name=f"latency-server-{i}", daemon=True)
            p.start()
            procs.append(p)
        for _ in procs:
            try:
                kind, detail = ready.get(timeout=120)
            except queue.Empty:
                raise ServerError(f"{_hostport(config.host, port)}: worker processes did not start") from None
            if kind == "error":
                raise ServerError(str(detail))
        if on_ready is not None:
            on_ready(Serving(_hostport(config.host, port), workers, tuple(p.pid for p in procs)))
        _wait_signal(signals, also=lambda: any(not p.is_alive() for p in procs))
        if any(not p.is_alive() for p in procs):
            log.error("a latency server worker exited unexpectedly; stopping the others")
    finally:
        reservation.close()
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(config.grace_s + 5)
            if p.is_alive():
                p.kill()
                p.join()
