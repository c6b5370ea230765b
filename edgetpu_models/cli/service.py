"""CLI subcommand `latency-server`: serve the latency model over gRPC until SIGTERM (then drain and exit 0)."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
import threading

from edgetpu_models.cli.args import bounded_float, bounded_int, port_arg, size_arg, threads_arg
from edgetpu_models.cli.commands import command_help
from edgetpu_models.counts import INT32_MAX
from edgetpu_models.errors import UsageError
from edgetpu_models.io_utils import read_small_file
from edgetpu_models.nas.service.server import (
    ServerConfig,
    ServerError,
    Serving,
    check_config,
    read_token_file,
    serve,
)

_DEFAULTS = ServerConfig()
"""The server's own defaults: the flags' defaults are these, never a copy."""
_FLAGS = "--host, --token-file, --tls-cert/--tls-key, --tls-client-ca"


def _read_file(path: str, what: str) -> bytes:
    return read_small_file(path, what, ServerError)


def _check_tls_files(cert: str, key: str, client_ca: str | None) -> None:
    """Loads the PEM files as the server will, so a bad one is named here (gRPC only says it cannot listen)."""
    def reason(e: Exception) -> str:
        return getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)[:100]

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ServerError(f"{cert}: not a PEM certificate (--tls-cert): {reason(e)}") from None
    try:
        ctx.load_cert_chain(cert, key, password=b"")
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ServerError(f"{key}: not an unencrypted PEM private key matching {cert} (--tls-key): "
                          f"{reason(e)}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise ServerError(f"{client_ca}: not a PEM certificate (--tls-client-ca): {reason(e)}") from None


def _config(args: argparse.Namespace) -> ServerConfig:
    """The server configuration from the command line. `server.check_config` judges it, first with the files only
    named (so a refusal comes before any file is read: UsageError naming the flags), then as read."""
    named = ServerConfig(host=args.host, port=args.port, threads=args.threads, grace_s=args.grace,
                         token="named" if args.token_file else None, tls_cert=b"named" if args.tls_cert else None,
                         tls_key=b"named" if args.tls_key else None,
                         tls_client_ca=b"named" if args.tls_client_ca else None,
                         max_message_bytes=args.max_message_bytes, cache_size=args.cache_size)
    try:
        check_config(named)
    except ServerError as e:
        raise UsageError(f"{e} (flags: {_FLAGS})") from None
    token = read_token_file(args.token_file) if args.token_file else None
    if args.tls_cert is not None:
        _check_tls_files(args.tls_cert, args.tls_key, args.tls_client_ca)
    config = ServerConfig(
        host=args.host, port=args.port, threads=args.threads, token=token,
        tls_cert=_read_file(args.tls_cert, "TLS certificate") if args.tls_cert else None,
        tls_key=_read_file(args.tls_key, "TLS private key") if args.tls_key else None,
        tls_client_ca=_read_file(args.tls_client_ca, "client CA certificate") if args.tls_client_ca else None,
        max_message_bytes=args.max_message_bytes, cache_size=args.cache_size, grace_s=args.grace,
        measured=args.measured)
    check_config(config)
    return config


def _exit_now() -> None:
    """Ends the process without waiting for threads: one stuck in a call that never ends (a client that keeps a stream
    open) would otherwise keep the process alive past its grace period."""

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_latency_server(args: argparse.Namespace) -> int:
    # gRPC core logs its own copy of errors we already report in one line (e.g. a busy port); GRPC_VERBOSITY=debug
    # still turns them on.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

    config = _config(args)
    logging.basicConfig(level=logging.WARNING, format="latency-server: %(levelname)s: %(message)s")

    def ready(serving: Serving) -> None:
        mtls = " with client certificates" if config.tls_client_ca else ""
        extras = ", ".join(x for x in ("token" if config.token else "", f"TLS{mtls}" if config.tls_cert else "")
                           if x) or "plaintext"
        print(f"latency-server listening on {serving.address} ({extras}; {serving.workers} worker process(es) x "
              f"{args.threads} threads; max message {args.max_message_bytes} bytes); SIGTERM drains and stops",
              flush=True)

    serve(config, args.workers, on_ready=ready)
    print("latency-server drained and stopped", file=sys.stderr, flush=True)
    stuck = [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.current_thread()]
    if stuck and threading.current_thread() is threading.main_thread():
        _exit_now()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "latency-server", help=command_help("latency-server"),
        description="Serves the latency model over gRPC (service edgetpu_models.latency.v1.LatencyEstimator, plus the "
                    "standard health service and server reflection). Listens on loopback by default; any other "
                    "address needs --token-file or mutual TLS (--tls-client-ca). SIGTERM drains: calls in flight "
                    "finish, new ones get UNAVAILABLE; the process exits within --grace (+1 s).")
    p.add_argument("--host", default=_DEFAULTS.host, help=f"address to bind (default {_DEFAULTS.host})")
    p.add_argument("--port", type=port_arg, default=_DEFAULTS.port,
                   help=f"port (default {_DEFAULTS.port}; 0 picks a free one)")
    p.add_argument("--workers", type=bounded_int(1, 64), default=1, metavar="N",
                   help="server processes sharing the port (default 1); the estimator is pure Python, so use up to "
                        "one per core for throughput")
    p.add_argument("--threads", type=threads_arg, default=_DEFAULTS.threads, metavar="T",
                   help=f"threads per worker process (default {_DEFAULTS.threads})")
    p.add_argument("--token-file", metavar="F", help="file whose first line is the token every call must send as "
                                                      "'authorization: Bearer TOKEN'")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (needs --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--tls-client-ca", metavar="PEM",
                   help="with TLS, require client certificates signed by these roots (mutual TLS); a non-loopback "
                        "--host needs this or --token-file")
    p.add_argument("--max-message-bytes", type=size_arg(1024, INT32_MAX), default=_DEFAULTS.max_message_bytes,
                   metavar="N", help=f"largest request accepted, e.g. 64M (default "
                                     f"{_DEFAULTS.max_message_bytes >> 20}M); bigger ones get RESOURCE_EXHAUSTED")
    p.add_argument("--cache-size", type=bounded_int(0, 10_000_000), default=_DEFAULTS.cache_size, metavar="N",
                   help=f"identical requests answered from a cache of this many estimates (default "
                        f"{_DEFAULTS.cache_size}; 0: off)")
    p.add_argument("--grace", type=bounded_float(0.0, 3600.0), default=_DEFAULTS.grace_s, metavar="S",
                   help=f"on SIGTERM, seconds calls in flight get to finish (default {_DEFAULTS.grace_s:g})")
    p.add_argument("--measured", action="store_true",
                   help="also serve measured targets (each call builds, converts and times a model here with "
                        "TensorFlow; seconds per call). Off by default: the spec path stays TF-free and fast")
    p.set_defaults(func=cmd_latency_server)
