"""CLI subcommand `latency-server`: serve the latency model over gRPC until SIGTERM (then drain and exit 0)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 50051
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _byte_size(text: str) -> int:
    """'1048576', '512K', '64M', '1G' -> bytes."""
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a byte count such as 1048576, 512K or 64M, got {text!r}") from None


def _read_file(path: str, what: str) -> bytes:
    from .server import ServerError

    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ServerError(f"{path}: cannot read {what} ({e.strerror})") from None


def cmd_latency_server(args: argparse.Namespace) -> int:
    import logging
    import os

    # gRPC core logs its own copy of errors we already report in one line (e.g. a busy port); GRPC_VERBOSITY=debug
    # still turns them on.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from .server import ServerConfig, ServerError, Serving, is_loopback, read_token_file, serve

    if args.workers < 1:
        raise ServerError(f"--workers: expected an integer >= 1, got {args.workers}")
    if args.threads < 1:
        raise ServerError(f"--threads: expected an integer >= 1, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise ServerError(f"--port: expected 0..65535, got {args.port}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ServerError("--tls-cert and --tls-key go together")
    if not is_loopback(args.host) and args.token_file is None and args.tls_cert is None:
        raise ServerError(f"--host {args.host}: not a loopback address; binding it needs --token-file F "
                          f"(token checked on every call) or --tls-cert/--tls-key")
    token = read_token_file(args.token_file) if args.token_file else None
    tls_cert = _read_file(args.tls_cert, "TLS certificate") if args.tls_cert else None
    tls_key = _read_file(args.tls_key, "TLS private key") if args.tls_key else None
    config = ServerConfig(host=args.host, port=args.port, threads=args.threads, token=token, tls_cert=tls_cert,
                          tls_key=tls_key, max_message_bytes=args.max_message_bytes, cache_size=args.cache_size,
                          grace_s=args.grace, measured=args.measured)
    logging.basicConfig(level=logging.WARNING, format="latency-server: %(levelname)s: %(message)s")

    def ready(serving: Serving) -> None:
        extras = ", ".join(x for x in ("token" if token else "", "TLS" if tls_cert else "") if x) or "plaintext"
        print(f"latency-server listening on {serving.address} ({extras}; {serving.workers} worker process(es) x "
              f"{args.threads} threads; max message {args.max_message_bytes} bytes); SIGTERM drains and stops",
              flush=True)

    serve(config, args.workers, on_ready=ready)
    print("latency-server drained and stopped", file=sys.stderr, flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "latency-server", help="serve Edge TPU latency estimates over gRPC (for parallel search)",
        description="Serves the latency model over gRPC (service edgetpu_models.latency.v1.LatencyEstimator, plus the "
                    "standard health service and server reflection). Listens on loopback by default; any other "
                    "address needs --token-file or TLS. SIGTERM drains: calls in flight finish, new ones get "
                    "UNAVAILABLE.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes sharing the port (default 1); the estimator is pure Python, so use up to "
                        "one per core for throughput")
    p.add_argument("--threads", type=int, default=8, metavar="T", help="threads per worker process (default 8)")
    p.add_argument("--token-file", metavar="F", help="file whose first line is the token every call must send as "
                                                      "'authorization: Bearer TOKEN'")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (needs --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--max-message-bytes", type=_byte_size, default=DEFAULT_MAX_MESSAGE_BYTES, metavar="N",
                   help="largest request accepted, e.g. 64M (default); bigger ones get RESOURCE_EXHAUSTED")
    p.add_argument("--cache-size", type=int, default=4096, metavar="N",
                   help="identical requests answered from a cache of this many estimates (default 4096; 0: off)")
    p.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="on SIGTERM, seconds calls in flight get to finish (default 10)")
    p.add_argument("--measured", action="store_true",
                   help="also serve measured targets (each call builds, converts and times a model here with "
                        "TensorFlow; seconds per call). Off by default: the spec path stays TF-free and fast")
    p.set_defaults(func=cmd_latency_server)
