"""Small file helpers shared by every writer: nothing half-written (write a temp file, then rename)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator, Sequence


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which races with other
    threads creating files); 0o022 where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _temp_beside(path: str) -> tuple[int, str]:
    """A new hidden temp file in `path`'s folder with its suffix (writers such as Keras dispatch on it). Its mode is
    what `open` would give (0666 less the umask), not mkstemp's 0600, since it is renamed onto the user's file."""
    base = os.path.basename(path)
    suffix = ".weights.h5" if base.endswith(".weights.h5") else os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike[str]") -> Iterator[str]:
    """Yields a temporary path beside `path` (same suffix, so writers that dispatch on it work) and renames it onto
    `path` when the block succeeds; on error the temporary file is removed and `path` is left untouched."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    os.unlink(tmp)  # writers such as Keras' save refuse or misbehave on an existing file; hand them a free name
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: "str | os.PathLike[str]", data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomic(path: "str | os.PathLike[str]", text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


MAX_YAML_NODES = 200_000
"""Values a YAML document may hold once its aliases are expanded. A few hundred bytes of nested aliases (a "billion
laughs" document) expand to billions of values; anything that walks them (validation, an error message, JSON) would
then run without bound. Real spec and config files hold a few thousand."""


def _expanded_size(root: Any, limit: int) -> int:
    """How many values `root` holds with shared (aliased) parts counted every time they occur, up to `limit` + 1.
    Raises ValueError for a document that contains itself (a recursive alias)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (list, dict)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError("a recursive alias (the document contains itself)")
        active.add(key)
        total = 1
        for child in (node.values() if isinstance(node, dict) else node):
            total += size(child)
            if total > limit:
                break
        active.discard(key)
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(root)


def load_yaml_text(text: str, where: str, error: type[Exception]) -> Any:
    """Parses YAML text (safe loader) with alias expansion bounded; any failure raises `error` with one line naming
    `where` (and the line, for bad YAML)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{where}: not valid YAML{at}: {str(getattr(e, 'problem', e))[:200]}") from None
    except RecursionError:
        raise error(f"{where}: not valid YAML: nested too deeply") from None
    try:
        size = _expanded_size(data, MAX_YAML_NODES)
    except (ValueError, RecursionError) as e:
        raise error(f"{where}: not a usable YAML document ({str(e)[:100] or 'nested too deeply'})") from None
    if size > MAX_YAML_NODES:
        raise error(f"{where}: more than {MAX_YAML_NODES} values once its aliases are expanded (an alias bomb?)")
    return data


def read_small_file(path: "str | os.PathLike[str]", what: str, error: type[Exception],
                    limit: int = 16 << 20) -> bytes:
    """The bytes of a small input file (a certificate, a key, a token); any failure raises `error` in one line."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise error(f"{path}: larger than {limit} bytes: not a {what}")
    return data


def read_token_file(path: "str | os.PathLike[str]", error: type[Exception]) -> str:
    """A bearer token: the first line of a small file, stripped; the one reader for the server and every client.
    Raises `error` in one line when the file is missing, unreadable, too large, not text or empty."""
    data = read_small_file(path, "token file", error, limit=64 << 10)
    try:
        token = data.decode("utf-8").splitlines()[0].strip() if data.strip() else ""
    except UnicodeDecodeError:
        raise error(f"{os.fspath(path)}: token file is not UTF-8 text") from None
    if not token:
        raise error(f"{os.fspath(path)}: token file is empty (expected the token on its first line)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        raise error(f"{os.fspath(path)}: the token holds control characters (not sendable as a gRPC header)")
    return token


def read_yaml(path: "str | os.PathLike[str]", what: str, error: type[Exception]) -> Any:
    """Parses a YAML file (see `load_yaml_text`); any failure raises `error` with one line naming the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read {what} ({e})") from None
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{path}: larger than {MAX_YAML_BYTES} bytes: not a {what}")
    return load_yaml_text(text, path, error)


MAX_YAML_BYTES = 16 << 20



def _stage(path: str, content: Any) -> str:
    """Writes `content` (bytes, text, or a function that writes the file it is given) to a temp file beside `path`."""
    fd, tmp = _temp_beside(path)
    if callable(content):
        os.close(fd)
        os.unlink(tmp)
        content(tmp)
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
    return tmp


def _restore(replaced: list[tuple[str, str | None]]) -> None:
    """Puts back the files a failed group write had already replaced (or removes the ones it created)."""
    for path, backup in reversed(replaced):
        if backup is not None:
            os.replace(backup, path)
        elif os.path.exists(path):
            os.unlink(path)


def write_group_atomic(files: "dict[str, Any]") -> None:
    """Writes several files as one unit: all of them land, or none changes.

    Every file is written to a temporary file first; only when all are written are they renamed into place, and a
    failed rename puts back the files already replaced. Values are bytes, text, or a function that writes the path it
    is given (e.g. a Keras `model.save`)."""
    for path in files:
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path}: is a directory")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staged: dict[str, str] = {}
    replaced: list[tuple[str, str | None]] = []
    try:
        for path, content in files.items():
            staged[path] = _stage(path, content)
        for path, tmp in staged.items():
            backup = tmp + ".bak" if os.path.exists(path) else None
            if backup is not None:
                os.link(path, backup)
            os.replace(tmp, path)
            replaced.append((path, backup))
    except BaseException:
        _restore(replaced)
        raise
    finally:
        leftovers = list(staged.values()) + [tmp + ".bak" for tmp in staged.values()]
        for leftover in leftovers:
            if os.path.exists(leftover):
                os.unlink(leftover)


def check_destination(path: "str | os.PathLike[str]", *, folder: bool = False, foreign: Sequence[str] = (),
                      force: bool = False) -> None:
    """The one check of an output path, before any work: can `path` (a file, or with `folder` a folder) be written?
    One-line EdgeTPUModelsError naming the path when it is the wrong kind of thing or its folder cannot be written,
    or when `foreign` names existing files the write would replace that are not this command's own earlier outputs
    (see `sidecar.foreign_outputs`), unless `force`."""
    from edgetpu_models.errors import EdgeTPUModelsError

    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and os.path.isdir(path) != folder:
        kind = "a folder" if folder else "a file"
        raise EdgeTPUModelsError(f"{path}: exists and is not {kind}")
    parent = path if folder and os.path.isdir(path) else os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    try:
        if not os.path.isdir(parent):
            raise NotADirectoryError(parent)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=parent)  # the real test, also for root
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise EdgeTPUModelsError(f"{path}: cannot write there ({parent} is not a writable folder)") from None
    if foreign and not force:
        others = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise EdgeTPUModelsError(f"{foreign[0]}{others}: exists and is not an output of this command for "
                                 f"{os.fspath(path)}; refusing to replace it (pass --force to replace it)")


def read_jsonl_records(path: "str | os.PathLike[str]", key: str) -> dict[str, dict[str, Any]]:
    """The records of an append-only JSON-lines cache (resumable timings), by their `key` field; lines that do not
    parse or lack the key (one cut short by an interruption) are skipped. A missing file is an empty cache."""
    import json

    out: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                out[rec[key]] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return out
