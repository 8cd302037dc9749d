"""File primitives of the leaderboard: hashing, reading a required or a submitted file, atomic writes, the lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metabench.leaderboard.schema import LeaderboardError


def sha256_bytes(content: bytes) -> str:
    """Hex sha256 of ``content``."""
    return hashlib.sha256(content).hexdigest()


def check_submitted_file(path: Path, what: str, limit: int) -> None:
    """Refuse ``path`` unless it is a regular file, not a symbolic link, of at most ``limit`` bytes (not read)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise LeaderboardError(f"{what} not found at {path}") from None
    except OSError as error:
        raise LeaderboardError(f"cannot read {what} at {path}: {error.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise LeaderboardError(f"{what} at {path} is a symbolic link: submit the file itself, not a link to it")
    if not stat.S_ISREG(info.st_mode):
        raise LeaderboardError(f"{what} at {path} is not a regular file")
    if info.st_size > limit:
        raise LeaderboardError(f"{what} at {path} is {info.st_size} bytes; the leaderboard accepts at most {limit}")


def read_submitted_file(path: Path, what: str, limit: int) -> bytes:
    """The bytes of a submitted file, checked by :func:`check_submitted_file` before it is opened (without
    following a link) and read (at most ``limit + 1`` bytes, in case it grew meanwhile)."""
    check_submitted_file(path, what, limit)
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as stream:
            content = stream.read(limit + 1)
    except OSError as error:
        raise LeaderboardError(f"cannot read {what} at {path}: {error.strerror}") from None
    if len(content) > limit:
        raise LeaderboardError(f"{what} at {path} is over {limit} bytes, the most the leaderboard accepts")
    return content


def json_bytes(value: Any) -> bytes:
    """``value`` as the leaderboard stores JSON: indented, keys sorted, UTF-8, a final newline."""
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_atomic(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Serialise the writers of one leaderboard: an advisory ``flock`` on the root folder (no lock file)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    handle = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock
