"""Latency server throughput: many concurrent clients on loopback against `edgetpu-models latency-server`.

    python benchmarks/latency_server.py [--clients 32] [--duration 20] [--workers 2] [--batch-size 32]

Starts the server as a subprocess on a free loopback port, then runs `--clients` concurrent LatencyClients (spread
over a few client processes, one channel each) for `--duration` seconds per phase:

1. single / unique: every request is a new NAS-like candidate (a zoo spec with seeded random stage widths, kernels,
   expansions, depths and resolution): every call misses the cache, as in a search.
2. single / repeated: the five zoo models at a few resolutions, over and over: answered from the server's cache.
3. batch / unique: EstimateBatch calls of `--batch-size` new candidates each.

For each phase it prints calls/s, estimates/s, p50 and p99 call latency (ms) and errors, then SIGTERMs the server and
checks it drains and exits 0. The issue's bar: 0 errors and >= 500 single estimates/s (phase 1 is the honest figure).
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

PHASES = ("single-unique", "single-repeated", "batch-unique")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def candidate(rng: random.Random, bases: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    """A NAS-like candidate: a zoo spec (its zoo variant as the default) with every stage's width, kernel, expansion
    and depth and the input resolution perturbed."""
    base, variant = bases[rng.randrange(len(bases))]
    spec = copy.deepcopy(base)
    spec["default_variant"] = variant
    spec["variants"][variant]["resolution"] = rng.choice(range(160, 321, 8))
    for st in spec["stages"]:
        st["filters"] = max(8, st["filters"] + 8 * rng.randint(-2, 2))
        st["kernel"] = rng.choice((3, 5))
        st["repeats"] = max(1, st["repeats"] + rng.randint(-1, 1))
        if st["block"] != "conv" and st["expansion"] != 1:
            st["expansion"] = rng.choice((4, 6, 8))
    return spec


def _base(name: str) -> tuple[dict[str, Any], str] | None:
    """A zoo spec to perturb, with its variant; None for one with grouped convolutions (MobilenetEdgeTPU-V2): random
    widths would break the group divisibility its spec requires (the server rightly refuses those candidates)."""
    from edgetpu_models.zoo import zoo_spec

    spec, variant = zoo_spec(name)
    if any(getattr(st, "group_size", None) for st in spec.stages):
        return None
    return spec.to_dict(), variant


@dataclass(frozen=True)
class _Load:
    """What every client thread of one phase sends, and when."""

    address: str
    phase: str
    start_at: float
    duration: float
    batch_size: int
    bases: list[tuple[dict[str, Any], str]]
    """Zoo specs (as dicts) and their zoo variants: what the unique candidates perturb."""
    repeated: list[tuple[str, int]]
    """(zoo model, resolution): the requests of the cached phase."""

    def call(self, client: Any, rng: random.Random, tid: int, i: int) -> tuple[float, int]:
        """Call i of thread `tid`: its latency in ms and how many estimates it returned."""
        if self.phase == "single-unique":
            spec = candidate(rng, self.bases)
            t0 = time.perf_counter()
            client.estimate(spec)
            n = 1
        elif self.phase == "single-repeated":
            name, res = self.repeated[(tid + i) % len(self.repeated)]
            t0 = time.perf_counter()
            client.estimate(name, resolution=res)
            n = 1
        else:
            batch = [candidate(rng, self.bases) for _ in range(self.batch_size)]
            t0 = time.perf_counter()
            client.estimate_batch(batch)
            n = self.batch_size
        return (time.perf_counter() - t0) * 1e3, n


def _client_thread(load: _Load, rng: random.Random, tid: int) -> tuple[list[float], int, int, list[str]]:
    """One client: connects, waits for the common start, then calls until the phase ends.

    Returns (call latencies in ms, estimates, errors, the first three error messages)."""
    from edgetpu_models.nas.service.client import LatencyClient

    lat: list[float] = []
    estimates = errors = 0
    messages: list[str] = []
    with LatencyClient(load.address, timeout_s=30.0, retries=5) as client:
        client.list_targets()  # connect before the clock starts
        while time.time() < load.start_at:
            time.sleep(0.005)
        end = load.start_at + load.duration
        i = 0
        while time.time() < end:
            try:
                ms, n = load.call(client, rng, tid, i)
                lat.append(ms)
                estimates += n
            except Exception as e:  # counted and reported, never hidden
                errors += 1
                if len(messages) < 3:
                    messages.append(f"{type(e).__name__}: {e}")
            i += 1
    return lat, estimates, errors, messages


def _client_proc(address: str, phase: str, n_threads: int, seed: int, start_at: float, duration: float,
                 batch_size: int, out: Any) -> None:
    import threading

    from edgetpu_models.zoo import ZOO

    load = _Load(address, phase, start_at, duration, batch_size,
                 bases=[_base(n) for n in ZOO if _base(n) is not None],
                 repeated=[(n, r) for n in ZOO for r in (192, 224, 256)])
    results: list[tuple[list[float], int, int, list[str]]] = []
    lock = threading.Lock()

    def worker(tid: int) -> None:
        result = _client_thread(load, random.Random(seed * 1000 + tid), tid)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


def run_phase(address: str, phase: str, clients: int, procs: int, duration: float, batch_size: int,
              seed: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    start_at = time.time() + 4.0  # time for the client processes to import and connect
    ps = [ctx.Process(target=_client_proc, args=(address, phase, n, seed + i, start_at, duration, batch_size, out))
          for i, n in enumerate(per) if n]
    for p in ps:
        p.start()
    collected = []
    for _ in ps:
        collected.extend(out.get(timeout=duration + 120))
    for p in ps:
        p.join(30)
    lat = sorted(x for r in collected for x in r[0])
    estimates = sum(r[1] for r in collected)
    errors = sum(r[2] for r in collected)
    messages = [m for r in collected for m in r[3]][:3]

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {"phase": phase, "clients": len(collected), "calls": len(lat), "calls_s": len(lat) / duration,
            "estimates_s": estimates / duration, "p50": pct(0.50), "p99": pct(0.99), "errors": errors,
            "messages": messages}


def _parse_args() -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default 20)")
    ap.add_argument("--client-procs", type=int, default=4, help="processes the clients are spread over (default 4)")
    ap.add_argument("--workers", type=int, default=2, help="server worker processes (default 2: one per core here)")
    ap.add_argument("--threads", type=int, default=8, help="threads per server worker (default 8)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {', '.join(PHASES)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true",
                    help="a smoke run (tiny settings, any machine): exit 0 on 0 errors and a clean drain, whatever the "
                         "speed; the speed bar is still printed")
    args = ap.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    bad = [p for p in phases if p not in PHASES]
    if bad:
        ap.error(f"--phases: unknown {', '.join(bad)} (choose from {', '.join(PHASES)})")
    return args, phases


def _run_phases(args: argparse.Namespace, phases: list[str], address: str,
                cmd: list[str]) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """Waits for the server, then runs each phase; returns the table rows and the phases' figures."""
    from edgetpu_models.nas.service.client import LatencyClient

    rows, results = [], []
    with LatencyClient(address, retries=0) as probe:
        probe.wait_ready(60)
        targets = probe.list_targets()
    print(f"server: {' '.join(cmd[1:])} (targets: {', '.join(targets)}); {args.clients} clients in "
          f"{args.client_procs} processes; {os.cpu_count()} CPUs; {args.duration:g} s per phase", flush=True)
    for i, phase in enumerate(phases):
        r = run_phase(address, phase, args.clients, args.client_procs, args.duration, args.batch_size,
                      args.seed + 100 * i)
        results.append(r)
        rows.append([r["phase"], r["clients"], r["calls"], f"{r['calls_s']:.0f}", f"{r['estimates_s']:.0f}",
                     f"{r['p50']:.2f}", f"{r['p99']:.2f}", r["errors"]])
        print(f"  {phase}: {r['estimates_s']:.0f} estimates/s, {r['errors']} errors", flush=True)
        for m in r["messages"]:
            print(f"    e.g. {m}", flush=True)
    return rows, results


def _stop_server(server: subprocess.Popen) -> int:
    """SIGTERM (the server drains), killed after 60 s; returns its exit status."""
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


def _report(rows: list[list[Any]], results: list[dict[str, Any]], rc: int, smoke: bool = False) -> bool:
    """Prints the table, the batch speed-up and whether the bar was met; returns whether it was (with `smoke`: whether
    there were no errors and the server drained cleanly)."""
    from edgetpu_models.tables import format_table

    print()
    print(format_table(["phase", "clients", "calls", "calls/s", "estimates/s", "p50 ms", "p99 ms", "errors"], rows,
                       right=(1, 2, 3, 4, 5, 6, 7)))
    print(f"\nserver exit status after SIGTERM: {rc}")
    single = [r for r in results if r["phase"].startswith("single")]
    batch = [r for r in results if r["phase"] == "batch-unique"]
    unique = [r for r in results if r["phase"] == "single-unique"]
    if unique and batch and unique[0]["estimates_s"] > 0:
        print(f"EstimateBatch vs single calls (unique candidates): {batch[0]['estimates_s']:.0f} vs "
              f"{unique[0]['estimates_s']:.0f} estimates/s ({batch[0]['estimates_s'] / unique[0]['estimates_s']:.2f}x)")
    total_errors = sum(r["errors"] for r in results)
    worst = min((r["estimates_s"] for r in single), default=float("nan"))
    ok = total_errors == 0 and worst >= 500 and rc == 0
    print(f"bar (0 errors, >= 500 single estimates/s, clean drain): {'met' if ok else 'NOT met'} "
          f"(errors {total_errors}, slowest single phase {worst:.0f} estimates/s)")
    return total_errors == 0 and rc == 0 if smoke else ok


def main() -> int:
    args, phases = _parse_args()
    port = free_port()
    address = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "edgetpu_models.cli", "latency-server", "--port", str(port),
           "--workers", str(args.workers), "--threads", str(args.threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rows, results = _run_phases(args, phases, address, cmd)
    finally:
        rc = _stop_server(server)
    return 0 if _report(rows, results, rc, args.smoke) else 1


if __name__ == "__main__":
    sys.exit(main())
