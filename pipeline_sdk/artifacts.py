"""What a run produced: artifact records, a local content-addressed store, and hashing off the caller's path.

An **artifact record** (:class:`Artifact`) names a file or a directory a run produced: its
name, its URI, its size in bytes, its sha256 and its media type.

- A local file's URI is ``file://`` + its absolute path.  ``s3://`` and ``gs://`` URIs are
  accepted as references: the bytes stay in the user's storage, nothing is read, and size
  and hash are unknown.  A local file may also be recorded under the URI it was uploaded to
  (``uri=``): its size and hash are then the local file's.
- The media type is guessed from the name by Python's own table (:mod:`mimetypes`, without
  the machine's ``mime.types``, so every machine guesses alike), else
  ``application/octet-stream``; a directory is ``inode/directory``.
- A **directory** is a manifest of its regular files: each one's path relative to it (with
  ``/``), size and sha256, sorted by path.  Symbolic links inside it are not followed, and
  neither they nor special files (FIFOs, sockets, devices) are recorded: they are listed as
  ``skipped``.  Empty directories are not recorded.  The path you name yourself may be a link:
  it is followed.  The directory's size is its files' total, and its sha256 is the sha256 of
  its canonical manifest (:meth:`Artifact.manifest_json`), so equal trees have equal hashes.

**The local store** (:class:`ArtifactStore`) keeps a copy of every file under
``MLOBS_HOME/artifacts/sha256/<first two hex digits>/<sha256>``: directories 0700, files 0600,
each written to a temporary file in ``MLOBS_HOME/artifacts/tmp`` while it is hashed (one
read), then renamed into place, so a reader never sees half a file; content stored once is
not stored again.  A directory's manifest is stored too, under the directory's hash.
:meth:`ArtifactStore.restore` copies an artifact back, to a path that must not exist yet,
and checks every file's sha256 on the way: a stored copy that changed raises
:class:`ArtifactCorrupt` naming the artifact and both hashes, and nothing is left at the
destination.  A reference-only artifact raises :class:`NotStored` naming its URI.

**Off the caller's path.**  :func:`pending` is all a logging call does: it checks its
arguments and stats the path.  Reading, hashing and copying happen in a
:class:`BackgroundHasher`: one worker thread with a bounded queue.  An artifact that finds
the queue full is hashed at the end of the run instead (when the hasher is closed), so a
call never waits.  A file that cannot be read, or is still waiting when ``close()`` runs out
of time, is delivered without a hash (name, URI, size from the stat, media type) and counted.

One concern in one module, past 400 lines: records, their store and their hasher change
together (the record's fields, the store's layout, what the hasher delivers).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import mimetypes
import os
import queue
import secrets
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlsplit

from .contract import (  # an artifact's fields on the io stream, importable from here too
    FIELD_MANIFEST,
    FIELD_MEDIA_TYPE,
    FIELD_SHA256,
    FIELD_SIZE_BYTES,
    FIELD_STORED,
    FIELD_URI,
)
from .files import make_private_dirs, open_private
from .validation import check_name, escape_surrogates, short_repr

log = logging.getLogger(__name__)

DIRECTORY_MEDIA_TYPE: Final = "inode/directory"
DEFAULT_MEDIA_TYPE: Final = "application/octet-stream"
REFERENCE_SCHEMES: Final = ("s3", "gs")  # URIs recorded as references, never read
QUEUE_SIZE: Final = 1000  # artifacts waiting for the hasher; more are hashed at the run's end
MAX_DEFERRED: Final = 100_000  # past this many waiting for the run's end, one is delivered unhashed
CLOSE_GRACE: Final = 5.0  # seconds close() waits, after giving up, for unhashed deliveries
THREAD_NAME: Final = "mlobs-artifact-hasher"
CHUNK: Final = 1 << 20  # bytes read (and hashed, and written) at a time

_TYPES = mimetypes.MimeTypes(filenames=())  # Python's own table only


class ArtifactError(Exception):
    """An artifact cannot be restored."""


class NotStored(ArtifactError):
    """Only a reference to the artifact was recorded: its bytes are not in the local store."""


class ArtifactCorrupt(ArtifactError):
    """A stored copy no longer has the sha256 it was stored under."""


class Cancelled(Exception):
    """Hashing was given up (the run's end ran out of time)."""


@dataclass(frozen=True)
class ManifestEntry:
    """One regular file of a directory artifact."""

    path: str  # relative to the directory, "/"-separated
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Artifact:
    """An artifact record.  ``sha256`` None: a reference, or a file that could not be hashed."""

    name: str
    uri: str
    size_bytes: int | None
    sha256: str | None
    media_type: str
    files: tuple[ManifestEntry, ...] | None = None  # a directory's manifest; None for a file
    skipped: tuple[str, ...] = ()  # a directory's links and special files, not recorded
    stored: bool = False  # the bytes are in the local store

    def manifest_json(self) -> str | None:
        """A directory's files as canonical JSON ``[[path, size, sha256], ...]``: its sha256 is this's."""
        return None if self.files is None else _manifest_json(self.files)

    def fields(self) -> dict[str, str | int]:
        """The record as event fields (the contract's names), those not known left out."""
        out: dict[str, str | int] = {FIELD_URI: self.uri, FIELD_MEDIA_TYPE: self.media_type}
        out[FIELD_STORED] = int(self.stored)
        if self.size_bytes is not None:
            out[FIELD_SIZE_BYTES] = self.size_bytes
        if self.sha256 is not None:
            out[FIELD_SHA256] = self.sha256
        if self.files is not None:
            manifest = {
                "files": [[e.path, e.size_bytes, e.sha256] for e in self.files],
                "skipped": list(self.skipped),
            }
            out[FIELD_MANIFEST] = _json(manifest)
        return out

    @classmethod
    def from_fields(cls, name: str, fields: dict[str, object]) -> Artifact:
        """The record :meth:`fields` wrote (as the read API gets it back)."""
        manifest = fields.get(FIELD_MANIFEST)
        files: tuple[ManifestEntry, ...] | None = None
        skipped: tuple[str, ...] = ()
        if isinstance(manifest, str):
            loaded = json.loads(manifest)
            files = tuple(ManifestEntry(str(p), int(n), str(h)) for p, n, h in loaded["files"])
            skipped = tuple(str(s) for s in loaded["skipped"])
        size, sha = fields.get(FIELD_SIZE_BYTES), fields.get(FIELD_SHA256)
        return cls(
            name=name,
            uri=str(fields[FIELD_URI]),
            size_bytes=None if size is None else int(str(size)),
            sha256=None if sha is None else str(sha),
            media_type=str(fields[FIELD_MEDIA_TYPE]),
            files=files,
            skipped=skipped,
            stored=fields.get(FIELD_STORED) == 1,
        )


def _json(value: object) -> str:
    """Compact JSON, non-ASCII text as it is; a name that is not valid UTF-8 (a lone surrogate of
    ``os.fsdecode``) as a ``\\udcxx`` escape, which JSON reads back as the same name."""
    return escape_surrogates(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _manifest_json(files: tuple[ManifestEntry, ...]) -> str:
    return _json([[e.path, e.size_bytes, e.sha256] for e in files])


@dataclass(frozen=True)
class Pending:
    """An artifact as a logging call leaves it: checked and stat'ed, not read."""

    name: str
    uri: str
    path: Path | None  # None for a reference
    is_dir: bool
    size_bytes: int | None  # a file's size at the stat; None for a directory or a reference
    media_type: str

    def unhashed(self) -> Artifact:
        """The record without what reading would add (hash, manifest)."""
        return Artifact(self.name, self.uri, self.size_bytes, None, self.media_type)


def _media_type(name: str) -> str:
    guessed, encoding = _TYPES.guess_type(name, strict=True)
    if guessed is None or encoding is not None:  # "x.csv.gz" is gzip data, not text/csv
        return DEFAULT_MEDIA_TYPE
    return guessed


def _check_uri(arg: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in REFERENCE_SCHEMES or not parts.netloc:
        raise ValueError(
            f"{arg}={short_repr(value)} is invalid: expected a local path, or an s3:// or gs:// URI "
            "with a bucket (s3://bucket/key)"
        )
    return value


def pending(path: str | os.PathLike[str], name: str | None = None, uri: str | None = None) -> Pending:
    """Check a logging call's arguments and stat ``path`` (a local path, ``file://``, ``s3://`` or ``gs://``).

    Raises ValueError naming the argument: a URI of another scheme, a path that does not
    exist or is neither a regular file nor a directory, a name that is not a valid name.
    """
    if isinstance(path, str) and "://" in path:
        if urlsplit(path).scheme == "file":
            path = unquote(urlsplit(path).path)
        else:
            _check_uri("path", path)
            if uri is not None:
                raise ValueError(f"uri={short_repr(uri)} is invalid: path is already a URI, {path!r}")
            default = PurePosixPath(urlsplit(path).path).name or urlsplit(path).netloc
            chosen = check_name("name", default if name is None else name)
            return Pending(chosen, path, None, False, None, _media_type(default))
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or a path, got {type(path).__name__} {short_repr(path)}")
    local = Path(path).absolute()
    try:
        info = local.stat()
    except OSError as exc:
        raise ValueError(f"path={str(path)!r} is invalid: {exc.strerror or exc}") from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise ValueError(f"path={str(path)!r} is invalid: neither a regular file nor a directory")
    chosen = check_name("name", local.name if name is None else name)
    recorded = local.as_uri() if uri is None else _check_uri("uri", uri)
    if stat.S_ISDIR(info.st_mode):
        return Pending(chosen, recorded, local, True, None, DIRECTORY_MEDIA_TYPE)
    return Pending(chosen, recorded, local, False, info.st_size, _media_type(local.name))


def _open_source(path: Path, follow: bool) -> int:
    """A regular file, opened to read: never blocking on a FIFO, never through a link unless ``follow``."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
    except OSError:
        os.close(fd)
        raise
    return fd


def _copy(fd: int, out: int | None, cancel: threading.Event | None) -> tuple[int, str]:
    """Read ``fd`` to its end, hashing it (and writing it to ``out``): (bytes read, sha256)."""
    digest, buf, total = hashlib.sha256(), bytearray(CHUNK), 0
    view = memoryview(buf)
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        n = os.readv(fd, [buf])
        if n == 0:
            return total, digest.hexdigest()
        digest.update(view[:n])
        total += n
        if out is not None:
            written = 0
            while written < n:
                written += os.write(out, view[written:n])


def _walk(root: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """A directory's regular files (relative path, path) and what was skipped, each sorted by path."""
    files: list[tuple[str, Path]] = []
    skipped: list[str] = []
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):  # a link is neither a directory nor a file here
                    stack.append((Path(entry.path), relative + "/"))
                elif entry.is_file(follow_symlinks=False):
                    files.append((relative, Path(entry.path)))
                else:
                    skipped.append(relative)
    return sorted(files), sorted(skipped)


def hash_pending(
    item: Pending, store: ArtifactStore | None = None, cancel: threading.Event | None = None
) -> Artifact:
    """Read, hash (and with a ``store``, copy) what :func:`pending` checked: the full record.

    Raises OSError when a file cannot be read, and Cancelled once ``cancel`` is set.
    """
    if item.path is None:
        return item.unhashed()  # a reference: nothing to read

    def one(path: Path, follow: bool) -> tuple[int, str]:
        fd = _open_source(path, follow)
        try:
            return store.put_fd(fd, cancel) if store is not None else _copy(fd, None, cancel)
        finally:
            os.close(fd)

    if not item.is_dir:
        size, sha = one(item.path, follow=True)
        return Artifact(item.name, item.uri, size, sha, item.media_type, stored=store is not None)
    found, skipped = _walk(item.path)
    files = tuple(ManifestEntry(relative, *one(path, follow=False)) for relative, path in found)
    manifest = _manifest_json(files).encode()
    sha = hashlib.sha256(manifest).hexdigest()
    if store is not None:
        store.put_bytes(manifest, sha)
    total = sum(e.size_bytes for e in files)
    return Artifact(
        item.name, item.uri, total, sha, DIRECTORY_MEDIA_TYPE, files, tuple(skipped), store is not None
    )


def describe(path: str | os.PathLike[str], name: str | None = None, uri: str | None = None) -> Artifact:
    """The record of a file, a directory or a reference, read and hashed here (see :func:`pending`)."""
    return hash_pending(pending(path, name, uri))


def _safe_relative(name: str, path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or not relative.parts or any(p in ("..", ".") for p in relative.parts):
        raise ArtifactError(f"artifact {name!r}: the manifest's path {path!r} leaves its directory")
    return relative


class ArtifactStore:
    """Content-addressed copies under ``home/artifacts/sha256/<hh>/<sha256>`` (0700 dirs, 0600 files)."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.root = Path(home) / "artifacts"
        self._blobs = self.root / "sha256"
        self._tmp = self.root / "tmp"

    def path_of(self, sha256: str) -> Path:
        """Where the content of hash ``sha256`` is (or would be) stored."""
        if len(sha256) != 64 or any(ch not in "0123456789abcdef" for ch in sha256):
            raise ValueError(f"sha256={sha256!r} is invalid: expected 64 lowercase hex digits")
        return self._blobs / sha256[:2] / sha256

    def add(self, path: str | os.PathLike[str], name: str | None = None, uri: str | None = None) -> Artifact:
        """Record and copy a file or a directory here, now (the run hands this to its hasher instead)."""
        return hash_pending(pending(path, name, uri), self)

    def _temp(self) -> tuple[Path, int]:
        make_private_dirs(self._tmp)
        temp = self._tmp / f"{os.getpid()}-{secrets.token_hex(8)}"
        return temp, open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)

    def put_fd(self, fd: int, cancel: threading.Event | None = None) -> tuple[int, str]:
        """Copy an open file in, hashing it on the way: (size, sha256)."""
        temp, out = self._temp()
        try:
            try:
                size, sha = _copy(fd, out, cancel)
                os.fsync(out)
            finally:
                os.close(out)
            self._place(temp, sha, size)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return size, sha

    def put_bytes(self, data: bytes, sha256: str) -> None:
        """Store ``data``, whose sha256 the caller computed."""
        temp, out = self._temp()
        try:
            try:
                os.write(out, data)
                os.fsync(out)
            finally:
                os.close(out)
            self._place(temp, sha256, len(data))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _place(self, temp: Path, sha256: str, size: int) -> None:
        final = self.path_of(sha256)
        make_private_dirs(final.parent)
        try:
            existing = os.lstat(final)
        except FileNotFoundError:
            os.replace(temp, final)
            return
        if stat.S_ISREG(existing.st_mode) and existing.st_size == size:
            temp.unlink()  # stored before: content-addressed, so the same bytes
        else:
            os.replace(temp, final)  # a damaged copy of another size is replaced

    def manifest(self, record: Artifact) -> tuple[ManifestEntry, ...]:
        """A stored directory's manifest, checked against the directory's sha256."""
        if record.sha256 is None:
            raise NotStored(f"artifact {record.name!r} ({record.uri}) was not hashed: nothing was stored")
        data = self._read_stored(record.name, record.sha256)
        got = hashlib.sha256(data).hexdigest()
        if got != record.sha256:
            raise ArtifactCorrupt(_corrupt(record.name, self.path_of(record.sha256), got, record.sha256))
        return tuple(ManifestEntry(str(p), int(n), str(h)) for p, n, h in json.loads(data))

    def _read_stored(self, name: str, sha256: str) -> bytes:
        source = self.path_of(sha256)
        try:
            fd = _open_source(source, follow=False)
        except FileNotFoundError:
            raise ArtifactError(_missing(name, source, sha256)) from None
        with os.fdopen(fd, "rb") as stream:
            return stream.read()

    def restore(self, record: Artifact, dest: str | os.PathLike[str]) -> Path:
        """Copy a stored artifact to ``dest`` (which must not exist), checking every sha256 on the way.

        Raises NotStored for a reference, ArtifactCorrupt for a stored copy that changed, and
        ArtifactError for a stored copy that is missing; nothing is left at ``dest`` then.
        Restored files are the user's own: created with the usual modes (the umask applies).
        """
        if not record.stored or record.sha256 is None:
            raise NotStored(
                f"artifact {record.name!r}: only a reference to {record.uri} was recorded; its bytes were "
                f"never copied to the local store, so fetch them from {record.uri}"
            )
        target = Path(dest)
        if target.exists() or target.is_symlink():
            raise ValueError(f"dest={str(dest)!r} is invalid: it exists; restore writes a new path")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.mlobs-partial-{secrets.token_hex(4)}"
        try:
            if record.media_type != DIRECTORY_MEDIA_TYPE:
                self._restore_file(record.name, record.sha256, partial)
            else:
                files = record.files if record.files is not None else self.manifest(record)
                partial.mkdir()
                for entry in files:
                    relative = _safe_relative(record.name, entry.path)
                    (partial / relative).parent.mkdir(parents=True, exist_ok=True)
                    self._restore_file(f"{record.name}/{entry.path}", entry.sha256, partial / relative)
            os.rename(partial, target)
        except BaseException:
            if partial.is_dir() and not partial.is_symlink():
                shutil.rmtree(partial)
            else:
                partial.unlink(missing_ok=True)
            raise
        return target

    def _restore_file(self, name: str, sha256: str, target: Path) -> None:
        source = self.path_of(sha256)
        try:
            fd = _open_source(source, follow=False)
        except FileNotFoundError:
            raise ArtifactError(_missing(name, source, sha256)) from None
        try:
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                _, got = _copy(fd, out, None)
            finally:
                os.close(out)
        finally:
            os.close(fd)
        if got != sha256:
            raise ArtifactCorrupt(_corrupt(name, source, got, sha256))


def _missing(name: str, source: Path, sha256: str) -> str:
    return (
        f"artifact {name!r}: its stored copy {source} (sha256 {sha256}) is missing; "
        "was it stored under another MLOBS_HOME?"
    )


def _corrupt(name: str, source: Path, got: str, expected: str) -> str:
    return (
        f"artifact {name!r}: the stored copy {source} has sha256 {got}, but was stored with sha256 "
        f"{expected}: it changed after it was stored"
    )


@dataclass
class HasherStats:
    """What a BackgroundHasher did.  Every artifact submitted is delivered once: hashed or unhashed."""

    hashed: int = 0  # delivered whole: with their sha256 (references: with nothing to hash)
    deferred: int = 0  # found the queue full: hashed at close()
    unhashed: int = 0  # delivered without a hash: unreadable, or out of time at close()
    lost: int = 0  # the callback raised on their delivery


_CLOSE = object()  # the queue's last item: close() was called


class BackgroundHasher:
    """Hashes (and with a ``store``, copies) submitted artifacts in one worker thread.

    ``on_done(record)`` gets each full record, from the worker's thread.  ``submit`` never
    blocks: the queue holds ``queue_size`` artifacts, and one that finds it full waits for
    ``close()``, at the run's end (past MAX_DEFERRED waiting, it is delivered at once,
    unhashed).  ``close(timeout)`` hashes what is left, and what is not done within
    ``timeout`` seconds is delivered unhashed.  Failures are counted in :attr:`stats` and
    logged once per kind.
    """

    def __init__(
        self,
        on_done: Callable[[Artifact], None],
        store: ArtifactStore | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(
                f"queue_size={short_repr(queue_size)} is invalid: expected a whole number from 1"
            )
        self._on_done = on_done
        self._store = store
        self._queue: queue.Queue[Pending | object] = queue.Queue(queue_size)
        self._deferred: collections.deque[Pending] = collections.deque()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stats = HasherStats()
        self._logged: set[str] = set()

    @property
    def stats(self) -> HasherStats:
        """A copy of the counts so far."""
        with self._lock:
            return replace(self._stats)

    @property
    def cancelled(self) -> bool:
        """close() ran out of time: what is left is delivered unhashed."""
        return self._cancel.is_set()

    def submit(self, item: Pending) -> None:
        """Hand an artifact to the worker (started at the first one).  Never blocks."""
        with self._lock:
            if self._closed:
                raise RuntimeError("BackgroundHasher.submit(): the hasher is closed (the run has ended)")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                self._stats.deferred += 1
                if len(self._deferred) < MAX_DEFERRED:
                    self._deferred.append(item)
                    return
        self._deliver(item.unhashed(), hashed=False)  # past MAX_DEFERRED: at once, without a hash

    def close(self, timeout: float | None = None) -> HasherStats:
        """Hash what is left and end the worker; past ``timeout`` seconds, deliver the rest unhashed."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            try:
                self._queue.put(_CLOSE, timeout=timeout)
            except queue.Full:
                self._cancel.set()  # the worker now empties the queue fast, unhashed
                self._queue.put(_CLOSE)
            thread.join(timeout)
            if thread.is_alive():
                self._cancel.set()
                thread.join(CLOSE_GRACE)
                if thread.is_alive():
                    log.warning(
                        "mlobs: the artifact hasher did not end within %s s of giving up", CLOSE_GRACE
                    )
        return self.stats

    def _run(self) -> None:
        while (item := self._queue.get()) is not _CLOSE:
            assert isinstance(item, Pending)
            self._process(item)
        while True:  # the artifacts that found the queue full: hashed at the run's end
            with self._lock:
                if not self._deferred:
                    return
                item = self._deferred.popleft()
            self._process(item)

    def _process(self, item: Pending) -> None:
        if self._cancel.is_set():
            self._deliver(item.unhashed(), hashed=False)
            return
        try:
            record = hash_pending(item, self._store, self._cancel)
        except Cancelled:
            self._deliver(item.unhashed(), hashed=False)
        except OSError as exc:
            self._once(
                "reading",
                "mlobs: artifact %r (%s) was not hashed: %s; recorded without its sha256",
                item.name,
                item.uri,
                exc,
            )
            self._deliver(item.unhashed(), hashed=False)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the artifact is still recorded
            self._once(
                "failure",
                "mlobs: artifact %r (%s) was not hashed: %s: %s; recorded without its sha256",
                item.name,
                item.uri,
                type(exc).__name__,
                exc,
            )
            self._deliver(item.unhashed(), hashed=False)
        else:
            self._deliver(record, hashed=True)  # a reference, with nothing to read, too

    def _deliver(self, record: Artifact, hashed: bool) -> None:
        with self._lock:
            if hashed:
                self._stats.hashed += 1
            else:
                self._stats.unhashed += 1
        try:
            self._on_done(record)
        except Exception as exc:  # noqa: BLE001 - the caller's callback: counted, the worker goes on
            with self._lock:
                self._stats.lost += 1
            self._once(
                "callback",
                "mlobs: the artifact record of %r was lost: its callback raised %s: %s",
                record.name,
                type(exc).__name__,
                exc,
            )

    def _once(self, kind: str, message: str, *args: object) -> None:
        with self._lock:
            first = kind not in self._logged
            self._logged.add(kind)
        if first:
            log.warning(message + " (later ones are counted only)", *args)
