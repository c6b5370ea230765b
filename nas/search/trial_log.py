"""The search's state: an append-only JSON-lines log, flushed and fsynced after every event.

Two kinds of events: {"event": "ask", "trial": i, "point": [...]} when the controller proposes trial i, and
{"event": "result", "trial": i, ...} when it is done. A kill -9 can at worst leave a torn last line; `read_events`
drops it (and `TrialLog` truncates it away), so a resumed search sees exactly the events that were completed.
TF-free.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from edgetpu_models.errors import TrialLogError

LOG_NAME = "trials.jsonl"


def _parse(path: str) -> tuple[list[dict[str, Any]], int]:
    """Events and the byte length of the complete, valid prefix of the file."""
    events: list[dict[str, Any]] = []
    good = 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    lines = data.split(b"\n")
    for n, raw in enumerate(lines):
        last = n == len(lines) - 1
        if last and raw == b"":
            break
        try:
            ev = json.loads(raw)
            if not isinstance(ev, dict) or "event" not in ev or "trial" not in ev:
                raise ValueError("not an event")
        except ValueError:
            if last or all(not x.strip() for x in lines[n + 1:]):
                break  # a torn final line from a kill mid-write: the event never happened
            raise TrialLogError(f"{path}: line {n + 1}: not a trial-log event") from None
        if last:  # a complete JSON object without its newline: keep it, the newline is re-added
            events.append(ev)
            good = pos + len(raw)
            break
        events.append(ev)
        pos += len(raw) + 1
        good = pos
    return events, good


def read_events(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    return _parse(path)[0]


class TrialLog:
    """Opens (creating or repairing) `DIR/trials.jsonl` for appending."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LOG_NAME)
        self.events: list[dict[str, Any]] = []
        if os.path.exists(self.path):
            self.events, good = _parse(self.path)
            with open(self.path, "rb+") as f:
                f.truncate(good)
                if good and (f.seek(good - 1) or f.read(1) != b"\n"):
                    f.write(b"\n")
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, event: dict[str, Any]) -> None:
        self._f.write(json.dumps(event, sort_keys=True, allow_nan=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.events.append(event)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "TrialLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)


def completed_results(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The result events in completion order; a trial with two results is a corrupt log."""
    seen: set[int] = set()
    out = []
    for ev in events:
        if ev["event"] == "result":
            if ev["trial"] in seen:
                raise TrialLogError(f"trial {ev['trial']} has two results in the log")
            seen.add(ev["trial"])
            out.append(ev)
    return out
