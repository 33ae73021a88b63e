"""Private files and directories, and a home directory that is always usable.

Everything the SDK keeps on disk (the spool, the local store) may hold a run's
params, inputs and log lines, so it is created for the owner alone: directories
0700, files 0600, whatever the umask.  Files are opened with ``O_NOFOLLOW``, so a
symlink planted in a leftover directory never redirects a write.

A step must never fail because ``MLOBS_HOME`` cannot be used (a read-only or full
file system, a path under a file, no permission).  :func:`usable_home` then falls
back to a private temporary directory and says so once, naming both paths.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

from . import contract as c

log = logging.getLogger("mlobs")

DIR_MODE = 0o700
FILE_MODE = 0o600
OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_PROBE_BYTES = 4096  # one page: a full file system refuses it


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700; existing ones are left alone."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile: leave its mode alone
        os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask


def open_private(path: Path, flags: int = OPEN_FLAGS) -> int:
    """Open (or create, 0600: a umask only takes bits away) a regular file, never through a symlink."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
    except OSError:
        os.close(fd)
        raise
    return fd


def owned_by_us(info: os.stat_result) -> bool:
    """The file or directory belongs to this process's effective uid."""
    return info.st_uid == os.geteuid()


def _probe(home: Path) -> None:
    """Raise OSError unless a private file of one page can be written in ``home``."""
    probe = home / f".mlobs-probe-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, b"\0" * _PROBE_BYTES)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def usable_home(home: Path) -> Path:
    """``home`` when a private spool and store can be written there, else a private temporary directory.

    The fallback is said once, at warning level, naming both paths and how to read what
    was recorded.  When no temporary directory can be made either, ``home`` is returned:
    the spool then retries, and counts every event it cannot keep as dropped.
    """
    try:
        make_private_dirs(home)
        _probe(home)
        return home
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
    try:
        fallback = Path(tempfile.mkdtemp(prefix="mlobs-home-"))  # 0700 by construction
        _probe(fallback)
    except OSError as exc:
        log.warning(
            "mlobs: %s=%s is not usable (%s), and no temporary directory is either (%s); "
            "events that cannot be spooled are dropped and counted in Client.stats()",
            c.ENV_HOME,
            home,
            reason,
            exc,
        )
        return home
    log.warning(
        "mlobs: %s=%s is not usable (%s); this process keeps its spool and local store in %s instead "
        "(read them with %s=%s mlobs runs list)",
        c.ENV_HOME,
        home,
        reason,
        fallback,
        c.ENV_HOME,
        fallback,
    )
    return fallback
