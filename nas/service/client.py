"""Client of the latency estimation server (`server.py`): what NAS workers and `estimate --server` use.

One channel per client, reused for every call (gRPC channels are thread-safe: share one client between threads).
Each attempt has a deadline (`timeout_s`); UNAVAILABLE (server down, restarting or draining) is retried with
exponential backoff and jitter, up to `retries` times, so a server restart during a search loses no request.
Results are plain dicts identical to `LatencyEstimate.to_dict()` of in-process estimation (doubles on the wire keep
every digit). Server-side library errors come back as the same typed errors (SpecError, ModelFileError, TargetError,
UnknownModelError) with the same message; transport problems raise `LatencyServerError`.

TF-free: importing or using the client never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any, Iterable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetpu_models import errors
from edgetpu_models.counts import parse_host_port
from edgetpu_models.errors import EdgeTPUModelsError, LatencyServerError, ModelFileError, ResponseTooLarge, SpecError
from edgetpu_models.io_utils import read_small_file, read_token_file
from edgetpu_models.model_io import resolve_model
from edgetpu_models.nas.service import latency_pb2, latency_pb2_grpc
from edgetpu_models.spec import Spec
from edgetpu_models.zoo import ZOO

DEFAULT_TARGET = "coral-usb"
ERROR_TYPE_KEY = "edgetpu-error-type"
AUTH_KEY = "authorization"
BATCH_CHUNK = 256
"""Specs per EstimateBatch call; bigger batches are split so no message nears the server's size limit."""

# Library errors the server may name in its trailing metadata, re-raised as themselves on the client.
_TYPED_ERRORS: dict[str, type[EdgeTPUModelsError]] = {
    name: cls for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, EdgeTPUModelsError)}


def _spec_text(spec: Spec | Mapping[str, Any]) -> str:
    data = spec.to_dict() if isinstance(spec, Spec) else spec
    try:
        return json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise SpecError(f"<spec>: cannot send this spec mapping as JSON ({e})") from None


def build_request(model: Any, target: str = DEFAULT_TARGET, resolution: int | None = None,
                  variant: str | None = None) -> latency_pb2.EstimateRequest:
    """The EstimateRequest for a model: a `Spec` or spec dict (sent as JSON), int8 .tflite bytes, a zoo name (resolved
    by the server), or a path to a spec (.yaml, validated here, sent as JSON) or .tflite file (sent as bytes)."""
    req = latency_pb2.EstimateRequest(target=target)
    if resolution is not None:
        req.resolution = resolution
    if variant is not None:
        req.variant = variant
    if isinstance(model, (str, os.PathLike)) and os.fspath(model) in ZOO:
        req.zoo_model = os.fspath(model)  # resolved by the server
        return req
    if isinstance(model, Mapping):
        req.spec = _spec_text(model)  # validated by the server, like any request
        return req
    try:
        ref = resolve_model(model)
    except ModelFileError:
        if isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview, Spec, Mapping)):
            raise
        raise TypeError(f"cannot send a {type(model).__name__} to the latency server: expected a Spec, spec dict, "
                        f".tflite bytes, zoo name or file path") from None
    if ref.kind == "keras":
        raise ModelFileError(f"{ref.path or ref.name}: the latency server takes specs and int8 .tflite files; "
                             f"estimate Keras models in-process or export them to .tflite first")
    if ref.kind == "tflite":
        req.tflite = ref.tflite_bytes()
    else:
        req.spec = _spec_text(ref.spec)
    return req


def response_to_dict(resp: latency_pb2.EstimateResponse) -> dict[str, Any]:
    """The dict `LatencyEstimate.to_dict()` gives for the same estimate."""
    return {
        "latency_ms": resp.latency_ms,
        "target": resp.target,
        "on_chip_param_bytes": resp.on_chip_param_bytes,
        "off_chip_param_bytes": resp.off_chip_param_bytes,
        "layers": [{"name": layer.name, "op": layer.op, "output_shape": list(layer.output_shape), "macs": layer.macs,
                    "ms": layer.ms, "bound": layer.bound} for layer in resp.layers],
    }


def _read_pem(path: str, what: str) -> bytes:
    return read_small_file(path, what, LatencyServerError)

def _tls_credentials(ca: str, cert: str | None, key: str | None) -> grpc.ChannelCredentials:
    """Channel credentials trusting `ca`, with this client's certificate and key when given (mutual TLS)."""
    if (cert is None) != (key is None):
        raise LatencyServerError("a client certificate (tls_cert) and its private key (tls_key) go together")
    root = _read_pem(ca, "CA certificate")
    if cert is None or key is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=_read_pem(key, "client private key"),
                                        certificate_chain=_read_pem(cert, "client certificate"))


def _check_pem_files(ca: str, cert: str | None, key: str | None) -> None:
    """Parses the PEM files as TLS will (gRPC only fails at the first call, with a vague UNAVAILABLE)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for path, flag, load in ((ca, "--tls-ca", lambda: ctx.load_verify_locations(cafile=ca)),
                             (key, "--tls-key/--tls-cert", lambda: ctx.load_cert_chain(cert, key, password=b""))):
        if path is None:
            continue
        try:
            load()
        except (ssl.SSLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)[:100]
            raise LatencyServerError(f"{path}: not a usable PEM file ({flag}): {reason}") from None


def client_credentials(token_file: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                       tls_key: str | None = None) -> dict[str, Any]:
    """`LatencyClient` keyword arguments from what a user names on a command line (the same options the server
    takes): the token read from `token_file` (its first line, as the server reads its own), and the TLS files, checked
    now so a bad one is one line before any work rather than a failed call later."""
    if (tls_cert is None) != (tls_key is None):
        raise LatencyServerError("--tls-cert and --tls-key go together (this client's certificate and its key)")
    if tls_cert is not None and tls_ca is None:
        raise LatencyServerError("--tls-cert needs --tls-ca (client certificates go with TLS)")
    kwargs: dict[str, Any] = {"tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key}
    if tls_ca is not None:
        _check_pem_files(tls_ca, tls_cert, tls_key)
    if token_file is not None:
        kwargs["token"] = read_token_file(token_file, LatencyServerError)
    return kwargs


class LatencyClient:
    """Client of one latency server.

    `timeout_s`: deadline of each attempt. `retries`: extra attempts after UNAVAILABLE, spaced by exponential backoff
    (`backoff_s` doubling up to `max_backoff_s`, with jitter). `token`: sent as `authorization: Bearer TOKEN`.
    `tls_ca`: path to the PEM root certificate to trust for a TLS server (None: plaintext). `tls_cert`/`tls_key`: this
    client's PEM certificate chain and private key, for a server that requires client certificates (mutual TLS).
    """

    def __init__(self, address: str, *, timeout_s: float = 10.0, retries: int = 5, token: str | None = None,
                 tls_ca: str | None = None, backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 tls_cert: str | None = None, tls_key: str | None = None) -> None:
        try:
            parse_host_port(address, "latency server address")
        except ValueError as e:
            raise LatencyServerError(str(e)) from None
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        self.address = address
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._metadata: tuple[tuple[str, str], ...] = ((AUTH_KEY, f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", -1),
                   # reconnect quickly after a server restart (gRPC's default first backoff is 1 s, growing to 120 s)
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", int(max(max_backoff_s, 0.1) * 1000))]
        if tls_ca is not None:
            self._channel = grpc.secure_channel(address, _tls_credentials(tls_ca, tls_cert, tls_key), options)
        elif tls_cert is not None:
            raise LatencyServerError("a client certificate (tls_cert) needs tls_ca: client certificates go with TLS")
        else:
            self._channel = grpc.insecure_channel(address, options)
        self._rpc = latency_pb2_grpc.LatencyEstimatorStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._closed = threading.Event()
        self._stats_lock = threading.Lock()
        self._stats = {"calls": 0, "retries": 0}

    # -- calls ---------------------------------------------------------------------------------------------------------
    def _call(self, method: Any, request: Any, what: str) -> Any:
        if self._closed.is_set():
            raise LatencyServerError(f"{self.address}: client is closed")
        attempt = 0
        with self._stats_lock:
            self._stats["calls"] += 1
        while True:
            try:
                return method(request, timeout=self.timeout_s, metadata=self._metadata)
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries and not self._closed.is_set():
                    delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
                    time.sleep(delay * random.uniform(0.5, 1.0))
                    attempt += 1
                    with self._stats_lock:
                        self._stats["retries"] += 1
                    continue
                raise self._error(e, what, attempt + 1) from None

    def _error(self, e: grpc.RpcError, what: str, attempts: int) -> EdgeTPUModelsError:
        code, details = e.code(), e.details() or ""
        trailing = dict(e.trailing_metadata() or ())  # type: ignore[attr-defined]
        cls = _TYPED_ERRORS.get(trailing.get(ERROR_TYPE_KEY, ""))
        if cls is not None and cls is not EdgeTPUModelsError:
            return cls(details)
        if code == grpc.StatusCode.UNAVAILABLE:
            return LatencyServerError(f"{self.address}: latency server unavailable after {attempts} attempt(s) "
                                      f"({details})", code)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return LatencyServerError(f"{self.address}: {what} took longer than the {self.timeout_s:g} s deadline",
                                      code)
        return LatencyServerError(f"{self.address}: {what}: {code.name}: {details}", code)

    def estimate(self, model: Any, target: str = DEFAULT_TARGET, resolution: int | None = None, *,
                 variant: str | None = None) -> dict[str, Any]:
        """Latency of one model (see `build_request` for what `model` may be): `LatencyEstimate.to_dict()`."""
        req = build_request(model, target, resolution, variant)
        return response_to_dict(self._call(self._rpc.Estimate, req, "Estimate"))

    def estimate_batch(self, specs: Iterable[Any], target: str = DEFAULT_TARGET, resolution: int | None = None, *,
                       variant: str | None = None, latency_only: bool = False) -> list[dict[str, Any]]:
        """Latencies of many models in few calls (chunks of BATCH_CHUNK), in order. `latency_only`: no per-layer rows
        (`layers` is empty): what a search step needs, far less to send and decode."""
        reqs = [build_request(s, target, resolution, variant) for s in specs]
        out: list[dict[str, Any]] = []
        for i in range(0, len(reqs), BATCH_CHUNK):
            out.extend(self._batch(reqs[i:i + BATCH_CHUNK], latency_only))
        return out

    def _batch(self, reqs: list[latency_pb2.EstimateRequest], latency_only: bool = False) -> list[dict[str, Any]]:
        """One EstimateBatch call; a chunk whose request or answer is too large for the server (RESOURCE_EXHAUSTED)
        is sent again as two halves, down to single models."""
        try:
            resp = self._call(self._rpc.EstimateBatch,
                              latency_pb2.EstimateBatchRequest(requests=reqs, latency_only=latency_only),
                              "EstimateBatch")
        except (LatencyServerError, ResponseTooLarge) as e:
            too_large = isinstance(e, ResponseTooLarge) or e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            if not too_large or len(reqs) <= 1:
                raise
            half = len(reqs) // 2
            return self._batch(reqs[:half], latency_only) + self._batch(reqs[half:], latency_only)
        return [response_to_dict(r) for r in resp.results]

    def list_targets(self) -> list[str]:
        return list(self._call(self._rpc.ListTargets, latency_pb2.ListTargetsRequest(), "ListTargets").targets)

    def health(self, service: str = "") -> str:
        """Health status name (SERVING, NOT_SERVING, ...) of the server or one of its services; one attempt."""
        try:
            resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s,
                                      metadata=self._metadata)
        except grpc.RpcError as e:
            raise self._error(e, "health check", 1) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Blocks until the server reports SERVING; LatencyServerError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status = self.health()
                if status == "SERVING":
                    return
                last = status
            except LatencyServerError as e:
                last = str(e)
            time.sleep(0.05)
        raise LatencyServerError(f"{self.address}: latency server not ready after {timeout_s:g} s ({last})")

    @property
    def stats(self) -> dict[str, int]:
        """Calls made and UNAVAILABLE retries so far (a search can log how often the server was away)."""
        with self._stats_lock:
            return dict(self._stats)

    # -- lifetime ------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._channel.close()

    def __enter__(self) -> "LatencyClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
