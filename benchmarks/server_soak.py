"""Soak test of the latency server: garbage, bombs and valid requests from many threads, then SIGTERM under load.

    python benchmarks/server_soak.py                      # 60 s, 32 client threads (loopback only)
    python benchmarks/server_soak.py --seconds 8 --threads 8

Starts `edgetpu-models latency-server` on a free loopback port (its own process, so its memory is its own) and sends,
from every thread in turn: valid requests through `LatencyClient` (zoo models, spec dicts at several resolutions,
small batches; each answer compared with in-process estimation), raw garbage bytes to every method, YAML alias bombs,
`repeats: 1000000000` specs, a crafted .tflite whose flatbuffer reuses one table, a variant name of 50 KB (a huge
error message), and batches of 1000-block specs whose answer passes the response budget. While the last calls are in
flight (a batch with a long deadline and a reflection stream held open), it sends SIGTERM and times the exit.

Prints valid requests sent / failed (must be 0 failed), hostile replies by status code (INTERNAL or UNKNOWN count as
failures), the server's peak resident memory (VmHWM, and the VmRSS samples) against the stated bound, and the time
SIGTERM took against the grace period. Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the crafted inputs come from the test helpers (tests.helpers.crafted)

import grpc  # noqa: E402

from edgetpu_models.nas.latency import estimator as latency  # noqa: E402
from edgetpu_models.nas.service import latency_pb2  # noqa: E402
from edgetpu_models.nas.service.client import LatencyClient, build_request  # noqa: E402
from edgetpu_models.zoo import zoo_spec  # noqa: E402

SERVICE = "/edgetpu_models.latency.v1.LatencyEstimator/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
HEALTH = "/grpc.health.v1.Health/Check"
VALID_MODELS = ("mobilenet_edgetpu", "mobilenet_edgetpu_075", "efficientnet_edgetpu_s", "efficientnet_edgetpu_m")
DEFAULT_RSS_BOUND_MB = 512
"""The stated bound for this traffic (requests of at most ~120 KB) and the server's defaults: interpreter, gRPC and the
estimator (~100 MB), the response cache (at most 64 MB), 8 threads each building at most one answer (16 MB budget:
128 MB), and the requests in flight; under 300 MB by that sum, 512 MB with margin."""


@dataclass
class Tally:
    """What the client threads saw (one lock: the counts are small and the calls are slow)."""

    valid_sent: int = 0
    valid_failed: list[str] = field(default_factory=list)
    hostile_sent: int = 0
    codes: collections.Counter = field(default_factory=collections.Counter)
    bad_replies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def valid(self, failure: str | None) -> None:
        with self.lock:
            self.valid_sent += 1
            if failure is not None:
                self.valid_failed.append(failure)

    def hostile(self, kind: str, code: str, details: str = "") -> None:
        with self.lock:
            self.hostile_sent += 1
            self.codes[code] += 1
            wrong_ok = code == "OK" and kind != "garbage"  # random bytes may happen to decode (e.g. unknown fields)
            if code in ("INTERNAL", "UNKNOWN") or wrong_ok or len(details) > 1100 or "\n" in details:
                self.bad_replies.append(f"{kind}: {code}: {details[:200]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def big_spec(repeats: int) -> dict:
    data = zoo_spec("efficientnet_edgetpu_l")[0].to_dict()
    data["stages"][-1]["repeats"] = repeats
    return data


def hostile_requests() -> dict[str, tuple[str, bytes]]:
    """Kind -> (method path, serialized request bytes)."""
    from tests.helpers.crafted import alias_bomb, reused_table_tflite

    def est(**kw: object) -> bytes:
        return latency_pb2.EstimateRequest(**kw).SerializeToString()

    big = build_request(big_spec(900))
    return {
        "alias_bomb": (SERVICE + "Estimate", est(spec=alias_bomb())),
        "huge_repeats": (SERVICE + "Estimate", build_request(big_spec(10 ** 9)).SerializeToString()),
        "crafted_tflite": (SERVICE + "Estimate", est(tflite=reused_table_tflite())),
        "huge_error": (SERVICE + "Estimate", est(zoo_model="mobilenet_edgetpu", variant="v" * 50_000)),
        "overflow": (SERVICE + "Estimate", build_request({**big_spec(2), "width": 1e300}).SerializeToString()),
        "big_batch": (SERVICE + "EstimateBatch",
                      latency_pb2.EstimateBatchRequest(requests=[big] * 100).SerializeToString()),
    }


def garbage() -> tuple[str, bytes]:
    method = random.choice((SERVICE + "Estimate", SERVICE + "EstimateBatch", SERVICE + "ListTargets", HEALTH))
    return method, bytes(random.getrandbits(8) for _ in range(random.randint(1, 300)))


class Soak:
    """The client side: `threads` threads sending a random mix until `stop` is set."""

    def __init__(self, address: str, tally: Tally) -> None:
        self.address = address
        self.tally = tally
        self.stop = threading.Event()
        self.hostile = hostile_requests()
        self.expected = {}
        for m in VALID_MODELS:
            spec, variant = zoo_spec(m)
            for r in (160, 192, 224):
                self.expected[(m, r)] = latency.estimate(spec, resolution=r, variant=variant).to_dict()

    def run_thread(self, seed: int) -> None:
        rng = random.Random(seed)
        channel = grpc.insecure_channel(self.address, [("grpc.max_receive_message_length", -1)])
        with LatencyClient(self.address, timeout_s=30, retries=8, backoff_s=0.1, max_backoff_s=2.0) as client:
            while not self.stop.is_set():
                if rng.random() < 0.5:
                    self.send_valid(client, rng)
                else:
                    self.send_hostile(channel, rng)
        channel.close()

    def send_valid(self, client: LatencyClient, rng: random.Random) -> None:
        keys = rng.sample(sorted(self.expected), 3)
        try:
            if rng.random() < 0.2:
                specs = [zoo_spec(m)[0] for m, _ in keys]
                got = [client.estimate(s, resolution=r, variant=zoo_spec(m)[1]) for s, (m, r) in zip(specs, keys)]
            elif rng.random() < 0.3:
                m, r = keys[0]
                got = client.estimate_batch([zoo_spec(m)[0]] * 3, resolution=r, variant=zoo_spec(m)[1])
                keys = [keys[0]] * 3
            else:
                got = [client.estimate(m, resolution=r) for m, r in keys]
            wrong = [k for k, g in zip(keys, got) if g != self.expected[k]]
            self.tally.valid(f"wrong answer for {wrong}" if wrong else None)
        except Exception as e:  # noqa: BLE001 - every failure of a valid request is counted and reported
            self.tally.valid(f"{type(e).__name__}: {str(e)[:200]}")

    def send_hostile(self, channel: grpc.Channel, rng: random.Random) -> None:
        if rng.random() < 0.4:
            kind, (method, payload) = "garbage", garbage()
        else:
            kind = rng.choice(sorted(self.hostile))
            method, payload = self.hostile[kind]
        call = channel.unary_unary(method)
        try:
            call(payload, timeout=3 if kind == "big_batch" else 10)
            self.tally.hostile(kind, "OK")
        except grpc.RpcError as e:
            self.tally.hostile(kind, e.code().name, e.details() or "")


def sample_rss(pid: int, samples: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.2):
        rss = read_status(pid, "VmRSS")
        if rss:
            samples.append(rss)


def read_status(pid: int, key: str) -> int:
    """A /proc/PID/status field in KiB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_server(port: int, grace: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edgetpu_models.cli", "latency-server", "--port", str(port),
                             "--grace", str(grace)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line} {proc.stderr.read() if proc.stderr else ''}")
    return proc


def collect(stream: object, lines: list[str]) -> None:
    """Reads the server's stderr as it comes (a full pipe would block the server's logging, and so the server)."""
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)


def _consume(stream: object) -> None:
    try:
        for _ in stream:  # type: ignore[attr-defined]
            pass
    except grpc.RpcError:
        pass  # cancelled by the server's shutdown: expected


def sigterm_under_load(proc: subprocess.Popen, address: str, grace: float) -> tuple[float, int | None]:
    """Leaves a long batch in flight and a reflection stream open, then SIGTERM: (seconds to exit, exit code)."""
    channel = grpc.insecure_channel(address)
    batch = latency_pb2.EstimateBatchRequest(requests=[build_request(big_spec(900 - i)) for i in range(60)])
    future = channel.unary_unary(SERVICE + "EstimateBatch").future(batch.SerializeToString(), timeout=120)
    held = threading.Event()

    def requests():
        yield b"\x3a\x00"  # list_services
        held.wait(60)

    stream = channel.stream_stream(REFLECTION)(requests(), timeout=120)
    threading.Thread(target=_consume, args=(stream,), daemon=True).start()
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(grace + 30)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - t0
    held.set()
    future.cancel()
    channel.close()
    return took, code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--grace", type=float, default=3.0, help="the server's --grace (default 3 s)")
    ap.add_argument("--rss-bound-mb", type=float, default=DEFAULT_RSS_BOUND_MB)
    args = ap.parse_args(argv)
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = start_server(port, args.grace)
    tally, samples, sampling, stderr_lines = Tally(), [], threading.Event(), []
    reader = threading.Thread(target=collect, args=(proc.stderr, stderr_lines), daemon=True)
    reader.start()
    threading.Thread(target=sample_rss, args=(proc.pid, samples, sampling), daemon=True).start()
    soak = Soak(address, tally)
    workers = [threading.Thread(target=soak.run_thread, args=(i,), daemon=True) for i in range(args.threads)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    soak.stop.wait(args.seconds)
    soak.stop.set()
    for w in workers:
        w.join(60)
    elapsed = time.monotonic() - t0
    hwm = read_status(proc.pid, "VmHWM")
    took, code = sigterm_under_load(proc, address, args.grace)
    sampling.set()
    if code is None:
        proc.kill()
        proc.wait()
    reader.join(10)
    return report(args, tally, elapsed, hwm, samples, took, code, "".join(stderr_lines))


def report(args: argparse.Namespace, tally: Tally, elapsed: float, hwm: int, samples: list[int], took: float,
           code: int | None, stderr: str) -> int:
    peak_mb = max([hwm, *samples]) / 1024
    tracebacks = stderr.count("Traceback")
    ok_valid = not tally.valid_failed and tally.valid_sent > 0
    ok_memory = peak_mb <= args.rss_bound_mb
    ok_stop = code == 0 and took <= args.grace + 1.5
    codes = ", ".join(f"{k}={v}" for k, v in sorted(tally.codes.items()))
    print(f"server soak: {elapsed:.1f} s, {args.threads} client threads, loopback, server grace {args.grace:g} s")
    print(f"valid requests: sent {tally.valid_sent}, failed {len(tally.valid_failed)}"
          + (f" (first: {tally.valid_failed[0]})" if tally.valid_failed else ""))
    print(f"hostile requests: sent {tally.hostile_sent}; replies by code: {codes}; bad replies "
          f"{len(tally.bad_replies)}" + (f" (first: {tally.bad_replies[0]})" if tally.bad_replies else ""))
    print(f"server resident memory: peak {peak_mb:.0f} MiB (VmHWM; last VmRSS sample "
          f"{(samples[-1] if samples else 0) / 1024:.0f} MiB), bound {args.rss_bound_mb:g} MiB: "
          f"{'ok' if ok_memory else 'OVER'}")
    print(f"SIGTERM with a batch in flight and a stream open: exit code {code} after {took:.2f} s, grace "
          f"{args.grace:g} s (+1.5 s margin): {'ok' if ok_stop else 'TOO SLOW'}")
    print(f"server stderr: {len(stderr.splitlines())} lines, {tracebacks} tracebacks")
    ok = ok_valid and ok_memory and ok_stop and not tally.bad_replies and tracebacks == 0
    print("soak: ok" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
