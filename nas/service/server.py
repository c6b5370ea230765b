"""The latency estimation server: `edgetpu_models.nas.latency.estimator` behind gRPC (service in `latency.proto`).

Search workers send candidate specs (or int8 .tflite files) and get the same numbers the in-process estimator gives.
Besides the LatencyEstimator service the server runs the standard gRPC health service and server reflection, so
generic tools (grpcurl, grpc_health_probe) can talk to it.

Status discipline: a malformed spec or .tflite, or request bytes that are not the method's message, is
INVALID_ARGUMENT (the message says what is wrong, in one line of at most MAX_ERROR_CHARS characters), an unknown target
or zoo model NOT_FOUND, a request above the configured message size or a batch whose answer would pass the response
budget RESOURCE_EXHAUSTED, any call while draining (or while too many expensive calls run) UNAVAILABLE, a missing or
wrong token UNAUTHENTICATED. Errors also carry the library error class in the trailing metadata `edgetpu-error-type`,
so `LatencyClient` re-raises the same typed error as in-process estimation would. An unexpected exception is INTERNAL
for that call only: a bad request never takes the server down.

Bounded work: requests are decoded here (not by gRPC), YAML is loaded with alias expansion bounded, specs are checked
against `spec.MAX_BLOCKS` before any graph is built, batches are bounded in length and in response bytes, the cache in
bytes, a batch stops when its client has gone, and expensive calls (big batches, .tflite files: `request_cost`) hold
at most half the threads, so cheap calls keep being served. Shutdown has a hard deadline: `drain` returns within the
grace period (plus a second), whatever the clients do.

The spec path is TF-free (JSON/YAML text -> `Spec` -> `estimate`).
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
import sys
import threading
import time
from collections import OrderedDict
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from edgetpu_models import spec as _spec
from edgetpu_models.counts import INT32_MAX
from edgetpu_models.errors import (
    EdgeTPUModelsError,
    RequestError,
    ResponseTooLarge,
    ServerError,
    TargetError,
    UnknownModelError,
)
from edgetpu_models.io_utils import load_yaml_text
from edgetpu_models.io_utils import read_token_file as _read_token_file
from edgetpu_models.nas.latency import estimator as _latency
from edgetpu_models.nas.service import latency_pb2
from edgetpu_models.spec import Spec, spec_from_dict
from edgetpu_models.zoo import zoo_spec

log = logging.getLogger(__name__)

SERVICE_NAME: str = latency_pb2.DESCRIPTOR.services_by_name["LatencyEstimator"].full_name
DEFAULT_TARGET = "coral-usb"
DEFAULT_PORT = 50051
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Large enough for an int8 EfficientNet-EdgeTPU-L .tflite (about 11 MB) with room to spare."""
DEFAULT_CACHE_SIZE = 4096
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""The cache holds at most this many bytes of responses (and at most `cache_size` of them)."""
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest answer of one call: a batch of 256 zoo-sized specs is about 1 MB; 70 specs of 1000 blocks pass it."""
MAX_BATCH = 1024
"""Requests in one EstimateBatch call (the client sends chunks of 256)."""
EXPENSIVE_COST = 2000
"""A call that costs more than this many blocks (`request_cost`: about 0.3 s of work) waits for an expensive slot."""
MAX_ERROR_CHARS = 1024
"""Error details are cut to this length: gRPC turns trailers over ~8 KB into RESOURCE_EXHAUSTED "Stream removed"."""
ERROR_TYPE_KEY = "edgetpu-error-type"
AUTH_KEY = "authorization"


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` as one line of at most `limit` characters (what goes into a status's details or a log line)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[:limit - 30]}... ({len(flat)} characters cut)"


# ----------------------------------------------------------------------------------------------------------------------
# Request -> estimate -> response

_PARSED: "OrderedDict[tuple[str, str], Spec]" = OrderedDict()
_PARSED_MAX = 4096
_PARSED_TEXT_MAX = 64 * 1024
"""Only spec texts up to this size are kept parsed, so the cache holds at most _PARSED_MAX x this many bytes."""
_PARSED_LOCK = threading.Lock()


def parse_spec_text(text: str, where: str = "request spec") -> Spec:
    """A spec sent as JSON (what `LatencyClient` sends: fast to parse) or YAML text (what a person sends); YAML alias
    expansion is bounded (`io_utils.load_yaml_text`). The last few thousand texts are kept parsed: a request's spec is
    read for its cost (`request_cost`) and again for its estimate, and a search resends the same candidates."""
    with _PARSED_LOCK:
        spec = _PARSED.get((where, text))
    if spec is not None:
        return spec
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = load_yaml_text(text, where, RequestError)
    spec = spec_from_dict(data, source=where)
    if len(text) <= _PARSED_TEXT_MAX:
        with _PARSED_LOCK:
            _PARSED[(where, text)] = spec
            if len(_PARSED) > _PARSED_MAX:
                _PARSED.popitem(last=False)
    return spec


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


TARGET_TTL_S = 1.0
"""How long the server reuses a target's check and file version (a recalibrated target is served within a second)."""
_TARGETS: dict[tuple[str, bool], tuple[float, Any, str]] = {}


def served_target(target: str, measured: bool = False) -> tuple[Any, str]:
    """(`check_target`'s target, its file's version), reused for TARGET_TTL_S: listing and stat-ing the target files
    on every request of a batch was a tenth of the batch path's time."""
    now = time.monotonic()
    hit = _TARGETS.get((target, measured))
    if hit is not None and now - hit[0] < TARGET_TTL_S:
        return hit[1], hit[2]
    t = check_target(target, measured)
    try:
        version = f"{t.path}:{os.stat(t.path).st_mtime_ns}"
    except OSError:
        version = ""
    _TARGETS[(target, measured)] = (now, t, version)
    return t, version


SPEC_BYTES_PER_COST = 32
"""Admission from sizes alone: a spec's text counts one block per this many bytes, so its parsing is paid for too (a
spec padded with 8 MB of comments costs as much as 250 000 blocks: an expensive call before it is read at all)."""


def size_cost(request: latency_pb2.EstimateRequest) -> int:
    """What a request costs, in blocks, from sizes known before any parsing: a .tflite one per 10 bytes, a spec text
    one per SPEC_BYTES_PER_COST bytes, a zoo model about 50."""
    kind = request.WhichOneof("model")
    if kind == "tflite":
        return len(request.tflite) // 10
    if kind == "spec":
        return len(request.spec) // SPEC_BYTES_PER_COST
    return 50


def request_cost(request: latency_pb2.EstimateRequest, where: str = "request") -> int:
    """What estimating `request` costs, in blocks (1000 blocks take about 0.15 s): a spec's blocks after depth scaling
    (parsing it, so a malformed one fails here at once), a zoo model's about 50, a .tflite one per 10 bytes (the
    reader's work is bounded by the file's size; a crafted 24 KB file takes about 0.4 s)."""
    kind = request.WhichOneof("model")
    if kind == "tflite":
        return len(request.tflite) // 10
    if kind != "spec":
        return 50
    spec = parse_spec_text(request.spec, f"{where}.spec")
    return _spec.block_count(spec, request.variant if request.HasField("variant") else None)


def estimate_request(request: latency_pb2.EstimateRequest, where: str = "request",
                     measured: bool = False) -> "_latency.LatencyEstimate":
    """Runs the estimator for one request; raises the library's typed errors (SpecError, ModelFileError, ...)."""
    target, _ = served_target(request.target or DEFAULT_TARGET, measured)
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
        return _latency.estimate(spec, target, resolution=resolution, variant=variant or zoo_variant)
    spec = parse_spec_text(request.spec, f"{where}.spec")
    return _latency.estimate(spec, target, resolution=resolution, variant=variant)


_ROW_BYTES: dict[Any, bytes] = {}
_ROW_BYTES_MAX = 100_000


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _layer_bytes(row: Any) -> bytes:
    """One `layers` entry of an EstimateResponse on the wire (field 5, length-delimited), memoised per row: a search's
    candidates share most of their rows (`latency.memo`), and building ~100 messages per answer is its largest cost."""
    b = _ROW_BYTES.get(row)
    if b is None:
        d = row.to_dict()
        body = latency_pb2.LayerLatency(**d).SerializeToString()
        b = b"\x2a" + _varint(len(body)) + body
        if len(_ROW_BYTES) >= _ROW_BYTES_MAX:
            _ROW_BYTES.clear()
        _ROW_BYTES[row] = b
    return b


def to_response(estimate: "_latency.LatencyEstimate") -> latency_pb2.EstimateResponse:
    """The proto twin of `LatencyEstimate.to_dict()` (each layer from its row's `to_dict`, so both always carry the
    same fields; tests/test_latency_server.py checks the two agree)."""
    resp = latency_pb2.EstimateResponse(latency_ms=estimate.latency_ms, target=estimate.target,
                                        on_chip_param_bytes=estimate.on_chip_param_bytes,
                                        off_chip_param_bytes=estimate.off_chip_param_bytes)
    resp.MergeFromString(b"".join([_layer_bytes(row) for row in estimate.layers]))
    return resp


class _LRUCache:
    """Cache of responses keyed by a digest of the request's deterministic serialization, bounded both in entries and
    in bytes (one response of a 1000-block spec is about 250 KB: an entry count alone bounds nothing)."""

    def __init__(self, maxsize: int, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._data: OrderedDict[bytes, tuple[latency_pb2.EstimateResponse, int]] = OrderedDict()
        self._bytes = 0
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
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: bytes, value: latency_pb2.EstimateResponse, size: int | None = None) -> None:
        size = value.ByteSize() if size is None else size
        if self.maxsize <= 0 or size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._data[key] = (value, size)
            self._bytes += size
            while len(self._data) > self.maxsize or self._bytes > self.max_bytes:
                self._bytes -= self._data.popitem(last=False)[1][1]

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._data), "maxsize": self.maxsize, "bytes": self._bytes,
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}


class _ExpensiveGate:
    """At most `slots` expensive calls (big batches, .tflite files) run at once, and at most `slots` more wait for a
    turn; any further one is turned away (UNAVAILABLE: the client retries). So expensive calls hold at most 2 * `slots`
    of the server's threads (half of them) and cheap calls are never queued behind them."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = threading.Semaphore(slots)
        self._waiting = 0
        self._lock = threading.Lock()

    def enter(self, timeout: float) -> bool:
        if self._free.acquire(blocking=False):
            return True
        with self._lock:
            if self._waiting >= self.slots:
                return False
            self._waiting += 1
        try:
            return self._free.acquire(timeout=max(0.0, timeout))
        finally:
            with self._lock:
                self._waiting -= 1

    def leave(self) -> None:
        self._free.release()


def _status_of(error: EdgeTPUModelsError) -> grpc.StatusCode:
    if isinstance(error, (TargetError, UnknownModelError)):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, ResponseTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an RPC method: UNAVAILABLE while draining, in-flight counting, typed errors -> status codes with a one-line
    message of bounded length."""
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
            context.abort(_status_of(e), one_line(str(e)))
        except Exception as e:  # a bad request must never take the server down: fail this call only
            if _is_abort(e, context):
                raise
            log.error("%s failed: %s", method.__name__, one_line(f"{type(e).__name__}: {e}", 300), exc_info=True)
            context.abort(grpc.StatusCode.INTERNAL, one_line(f"internal error: {type(e).__name__}: {e}"))
        finally:
            with self._idle:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.notify_all()

    return wrapper


def _is_abort(error: Exception, context: grpc.ServicerContext) -> bool:
    """True for the exception `context.abort` raises (the call already has its status: pass it on)."""
    code = getattr(context, "code", None)
    return type(error).__name__ == "_AbortError" or (callable(code) and code() is not None)


class LatencyService:
    """The RPC methods. Every call is counted in flight (for draining) and turns errors into status codes."""

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE, measured: bool = False, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 max_batch: int = MAX_BATCH, expensive_slots: int = 2) -> None:
        self.cache = _LRUCache(cache_size, cache_bytes)
        self.measured = measured
        self.max_response_bytes = max_response_bytes
        self.max_batch = max_batch
        self.expensive = _ExpensiveGate(expensive_slots)
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

    def _estimate_cached(self, request: latency_pb2.EstimateRequest, where: str, latency_only: bool = False) -> tuple[
            latency_pb2.EstimateResponse, int]:
        """(response, its size in bytes); ResponseTooLarge if it alone passes the response budget. `latency_only`:
        the answer without per-layer rows (cached apart from full answers)."""
        _, version = served_target(request.target or DEFAULT_TARGET, self.measured)
        key = self.cache.key(request, version + (":latency_only" if latency_only else ""))
        hit = self.cache.get(key)
        if hit is not None:
            return hit, hit.ByteSize()
        est = estimate_request(request, where, self.measured)
        resp = to_response(est) if not latency_only else latency_pb2.EstimateResponse(
            latency_ms=est.latency_ms, target=est.target, on_chip_param_bytes=est.on_chip_param_bytes,
            off_chip_param_bytes=est.off_chip_param_bytes)
        size = resp.ByteSize()
        if size > self.max_response_bytes:
            raise ResponseTooLarge(f"{where}: its answer would be {size} bytes; this server sends at most "
                                   f"{self.max_response_bytes} bytes per call")
        self.cache.put(key, resp, size)
        return resp, size

    def _expensive_turn(self, context: grpc.ServicerContext, what: str) -> None:
        """Waits for a turn among the expensive calls (at most until the call's deadline, 30 s); UNAVAILABLE if the
        queue is full or the turn does not come."""
        remaining = context.time_remaining()
        if not self.expensive.enter(min(30.0, remaining if remaining is not None else 30.0)):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"server busy: {what} waits behind {self.expensive.slots} "
                                                       f"expensive calls (big batches, .tflite files); retry later")

    def _gated(self, requests: Sequence[latency_pb2.EstimateRequest], context: grpc.ServicerContext, what: str,
               work: Callable[[], Any]) -> Any:
        """`work()`, after a turn among the expensive calls when the call is one. Admission is decided before any
        parsing from sizes (`size_cost`): a large text waits for its turn unread. Only a call that is small by size is
        parsed (bounded work) to count its blocks (`request_cost`: depth scaling can make a short spec deep); each
        spec text is parsed once for both admission and estimation (`parse_spec_text` keeps recent texts parsed)."""
        if sum(size_cost(r) for r in requests) <= EXPENSIVE_COST:
            names = ["request"] if len(requests) == 1 else [f"requests[{i}]" for i in range(len(requests))]
            if sum(request_cost(r, w) for r, w in zip(requests, names)) <= EXPENSIVE_COST:
                return work()
        self._expensive_turn(context, what)
        try:
            return work()
        finally:
            self.expensive.leave()

    @_rpc
    def Estimate(self, request: latency_pb2.EstimateRequest,
                 context: grpc.ServicerContext) -> latency_pb2.EstimateResponse:
        return self._gated([request], context, "Estimate", lambda: self._estimate_cached(request, "request")[0])

    @_rpc
    def EstimateBatch(self, request: latency_pb2.EstimateBatchRequest,
                      context: grpc.ServicerContext) -> latency_pb2.EstimateBatchResponse:
        count = len(request.requests)
        if count > self.max_batch:
            raise RequestError(f"requests: {count} models in one EstimateBatch; this server takes at most "
                               f"{self.max_batch} per call")
        return self._gated(request.requests, context, f"EstimateBatch of {count}",
                           lambda: self._estimate_batch(request, context))

    def _estimate_batch(self, request: latency_pb2.EstimateBatchRequest,
                        context: grpc.ServicerContext) -> latency_pb2.EstimateBatchResponse:
        """The batch, one model at a time: stops when the client has gone or its deadline has passed, and before the
        answer passes the response budget."""
        results, total = [], 0
        for i, r in enumerate(request.requests):
            remaining = context.time_remaining()
            if not context.is_active() or (remaining is not None and remaining <= 0):
                context.abort(grpc.StatusCode.CANCELLED, f"EstimateBatch abandoned by the client at requests[{i}]")
            resp, size = self._estimate_cached(r, f"requests[{i}]", request.latency_only)
            total += size + 8
            if total > self.max_response_bytes:
                raise ResponseTooLarge(f"requests[{i}]: the answer would pass {self.max_response_bytes} bytes; this "
                                       f"server sends at most that per call: send fewer or smaller models per call")
            results.append(resp)
        return latency_pb2.EstimateBatchResponse(results=results)

    @_rpc
    def ListTargets(self, request: latency_pb2.ListTargetsRequest,
                    context: grpc.ServicerContext) -> latency_pb2.ListTargetsResponse:
        return latency_pb2.ListTargetsResponse(targets=served_targets(self.measured))


# ----------------------------------------------------------------------------------------------------------------------
# Request decoding: every service's requests are parsed here, so bytes that are not the method's message are one
# INVALID_ARGUMENT and one log line, not an INTERNAL with a traceback (gRPC's own deserializer)

def _decode(raw: bytes, message_class: Any, context: grpc.ServicerContext, method: str) -> Any:
    try:
        return message_class.FromString(raw)
    except (DecodeError, RecursionError, ValueError):
        log.warning("%s: undecodable request (%d bytes) from %s", method, len(raw), one_line(context.peer(), 100))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"{method}: the request bytes do not decode as {message_class.DESCRIPTOR.full_name}")


def _decode_stream(raws: Iterator[bytes], message_class: Any, context: grpc.ServicerContext,
                   method: str) -> Iterator[Any]:
    for raw in raws:
        yield _decode(raw, message_class, context, method)


def _method_handler(method: Any, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """A handler for one method of a service descriptor that takes raw bytes and decodes them itself."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    name = f"/{method.containing_service.full_name}/{method.name}"
    serialize = response_class.SerializeToString
    if method.client_streaming:
        def streaming(raws: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            return behavior(_decode_stream(raws, request_class, context, name), context)
        make = (grpc.stream_stream_rpc_method_handler if method.server_streaming
                else grpc.stream_unary_rpc_method_handler)
        return make(streaming, None, serialize)

    def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
        return behavior(_decode(raw, request_class, context, name), context)
    make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
    return make(unary, None, serialize)


def add_decoding_service(server: grpc.Server, service: Any, servicer: Any) -> None:
    """Registers `servicer` for the service descriptor `service`, every request decoded by `_decode`."""
    handlers = {m.name: _method_handler(m, getattr(servicer, m.name))
                for m in service.methods if hasattr(servicer, m.name)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


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
    """The token: the file's first line, stripped (`io_utils.read_token_file`). Raises ServerError if missing,
    unreadable or empty."""
    return _read_token_file(path, ServerError)


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
    tls_client_ca: bytes | None = None
    """PEM root certificates of the clients: with TLS, every client must present a certificate they signed."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_bytes: int = DEFAULT_CACHE_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    grace_s: float = 10.0
    """How long a drain waits for in-flight calls before cancelling them (the drain returns within this + 1 s)."""
    measured: bool = False
    """Serve measured targets too (each call builds, converts and times a model with TensorFlow here)."""


def check_config(config: ServerConfig) -> None:
    """ServerError for a configuration that must not start, before anything binds."""
    if config.threads < 1:
        raise ServerError(f"threads: expected an integer >= 1, got {config.threads}")
    for what, value in (("max message bytes", config.max_message_bytes),
                        ("max response bytes", config.max_response_bytes)):
        if not 1024 <= value <= INT32_MAX:  # gRPC holds these limits in a C int
            raise ServerError(f"{what}: expected 1024 to {INT32_MAX}, got {value}")
    if not 0 <= config.grace_s <= 3600:
        raise ServerError(f"grace: expected 0 to 3600 seconds, got {config.grace_s}")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ServerError("TLS needs both a certificate and its private key")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ServerError("client certificates (mutual TLS) need the server's own TLS certificate and key")
    if not is_loopback(config.host) and not (config.token or config.tls_client_ca):
        what = "TLS without client certificates lets anyone call it" if config.tls_cert else "plaintext"
        raise ServerError(f"{config.host}: refusing to serve a non-loopback address without a token file or mutual "
                          f"TLS (client certificates): {what}")


class LatencyServer:
    """One gRPC server. `start()`, then `drain()` (or use it as a context manager)."""

    def __init__(self, config: ServerConfig = ServerConfig()) -> None:
        check_config(config)
        self.config = config
        self.service = LatencyService(config.cache_size, config.measured, cache_bytes=config.cache_bytes,
                                      max_response_bytes=config.max_response_bytes,
                                      expensive_slots=max(1, config.threads // 4))
        self.health = health.HealthServicer()
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
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

    def _grpc_server(self) -> grpc.Server:
        cfg = self.config
        self._executor = futures.ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="latency-rpc")
        server = grpc.server(
            self._executor,
            interceptors=[TokenAuthInterceptor(cfg.token)] if cfg.token else [],
            options=[("grpc.max_receive_message_length", cfg.max_message_bytes),
                     ("grpc.max_send_message_length", -1),
                     ("grpc.so_reuseport", int(cfg.reuse_port))])
        add_decoding_service(server, latency_pb2.DESCRIPTOR.services_by_name["LatencyEstimator"], self.service)
        add_decoding_service(server, health_pb2.DESCRIPTOR.services_by_name["Health"], self.health)
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        add_decoding_service(server, reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
                             reflection.ReflectionServicer(names))
        return server

    def _bind(self, server: grpc.Server) -> int:
        cfg = self.config
        bind = _hostport(cfg.host, cfg.port)
        why = "address in use or not local?"
        try:
            if cfg.tls_cert is not None:
                why = "address in use, not local, or a TLS certificate/key that is not valid PEM or does not match?"
                creds = grpc.ssl_server_credentials([(cfg.tls_key, cfg.tls_cert)], root_certificates=cfg.tls_client_ca,
                                                    require_client_auth=cfg.tls_client_ca is not None)
                port = server.add_secure_port(bind, creds)
            else:
                port = server.add_insecure_port(bind)
        except RuntimeError:
            port = 0
        if not port:
            raise ServerError(f"{bind}: cannot listen ({why})")
        return port

    def start(self) -> "LatencyServer":
        server = self._grpc_server()
        try:
            port = self._bind(server)
        except ServerError:
            server.stop(None)
            raise
        server.start()
        self._server, self._port = server, port
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("latency server listening on %s", self.address)
        return self

    def drain(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: health turns NOT_SERVING and new calls get UNAVAILABLE at once; calls in flight finish
        (up to `grace_s`, default the config's), then the server stops. Returns within `grace_s` + 1 s whatever the
        clients do (a stream that never ends is cancelled)."""
        if self._server is None or self._stopped.is_set():
            return
        grace = self.config.grace_s if grace_s is None else grace_s
        t0 = time.monotonic()
        self.service.draining.set()
        self.health.enter_graceful_shutdown()
        self.service.wait_idle(grace)
        remaining = max(0.0, grace - (time.monotonic() - t0))
        if not self._server.stop(remaining).wait(remaining + 1.0):
            log.warning("latency server on %s: calls still running after the %g s grace period", self.address, grace)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
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
    """Entry point of one worker process: serve until SIGTERM from the parent, drain, and exit at once (a thread stuck
    in a call that never ends must not keep the process alive past its grace period)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent turns it into SIGTERM
    try:
        server = LatencyServer(config).start()
    except EdgeTPUModelsError as e:
        ready.put(("error", str(e)))
        return
    ready.put(("ready", server.port))
    _wait_signal((signal.SIGTERM,))
    server.drain()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check_port_free(host: str, port: int) -> None:
    """ServerError if anything holds `port` (a listener or another group's reservation): a socket without
    SO_REUSEPORT cannot bind next to them, so a second server refuses instead of quietly sharing the port."""
    h = host.strip("[]")
    family = socket.AF_INET6 if ":" in h else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAITs of an earlier run do not count
        try:
            probe.bind((h, port))
            probe.listen(1)
        except OSError as e:
            raise ServerError(f"{_hostport(host, port)}: cannot listen ({e.strerror}): another server holds the "
                              f"port") from None


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
        _serve_in_process(config, on_ready, signals)
    else:
        _serve_workers(config, workers, on_ready, signals)


def _serve_in_process(config: ServerConfig, on_ready: Callable[[Serving], None] | None,
                      signals: Iterable[int]) -> None:
    server = LatencyServer(config).start()
    if on_ready is not None:
        on_ready(Serving(server.address, 1, (os.getpid(),)))
    _wait_signal(signals)
    server.drain()


def _serve_workers(config: ServerConfig, workers: int, on_ready: Callable[[Serving], None] | None,
                   signals: Iterable[int]) -> None:
    """`workers` server processes on one reserved port; stops them all when a signal arrives or one of them dies."""
    check_config(config)  # before starting anything
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # gRPC state must not be forked
    if config.port:
        _check_port_free(config.host, config.port)
    reservation = _reserve_port(config.host, config.port)
    procs: list[Any] = []
    try:
        port = reservation.getsockname()[1]
        child_config = dataclasses.replace(config, port=port, reuse_port=True)
        ready = ctx.Queue()
        for i in range(workers):  # appended one by one: the `finally` stops those started before a failure
            p = ctx.Process(target=_worker_main, args=(child_config, ready), name=f"latency-server-{i}", daemon=True)
            p.start()
            procs.append(p)
        _await_workers(ready, len(procs), _hostport(config.host, port))
        if on_ready is not None:
            on_ready(Serving(_hostport(config.host, port), workers, tuple(p.pid for p in procs)))
        _wait_signal(signals, also=lambda: any(not p.is_alive() for p in procs))
        if any(not p.is_alive() for p in procs):
            log.error("a latency server worker exited unexpectedly; stopping the others")
    finally:
        reservation.close()
        _stop_workers(procs, config.grace_s + 2)


def _await_workers(ready: Any, count: int, address: str) -> None:
    """Waits for every worker to report it listens; ServerError if one could not start or none reports in time."""
    for _ in range(count):
        try:
            kind, detail = ready.get(timeout=120)
        except queue.Empty:
            raise ServerError(f"{address}: worker processes did not start") from None
        if kind == "error":
            raise ServerError(str(detail))


def _stop_workers(procs: list[Any], timeout_s: float) -> None:
    """SIGTERMs the workers (each drains), then kills any that has not exited within `timeout_s` (all together)."""
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
