"""Downloads that resume, retry and verify; archives extracted without escaping their target.

Contracts used by every dataset module (``taskbal.data.datasets.<name>``):

* ``fetch(url, dest, sha256, *, md5=None, size=None, retries=5, backoff=1.0, progress=True)``
  downloads ``url`` to ``dest``. Bytes go to ``dest + ".part"``; an interrupted transfer resumes from
  the part file with an HTTP ``Range`` request; failures are retried with exponential backoff;
  ``dest`` appears (by rename) only after its checksum matched. A checksum mismatch deletes the part
  file and raises :class:`ChecksumError` naming the file, so a corrupt or half-written file is never
  taken for a complete one.
* ``verify(path, sha256=None, *, md5=None, size=None)`` raises :class:`ChecksumError` unless the file
  matches every digest given (SHA-256 preferred; MD5 only where upstream publishes nothing better).
* ``safe_extract(archive, dest)`` unpacks a zip / tar / tar.gz / tar.bz2 / tar.xz into ``dest``:
  absolute paths, ``..`` components and links pointing outside ``dest`` are refused before anything
  is written, and the archive is unpacked into a temporary directory first (inside ``dest``, so the
  final renames stay on one file system), so a failure leaves nothing partial behind.
* ``gunzip(path, dest)``: a ``.gz`` file decompressed atomically.
* ``copy_atomic(source, target)``: a file copied into place atomically.
* :class:`FileSpec`: one file of a dataset (name, urls, checksums, size).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20
USER_AGENT = "taskbal-data/0.1 (+reproduction pipeline; python urllib)"


class DownloadError(RuntimeError):
    """A file could not be downloaded (after all retries)."""


class ChecksumError(ValueError):
    """A file's content does not match its published checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction directory."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    ``urls`` are tried in order (mirrors). ``sha256`` / ``md5`` are the published checksums of the
    file itself; ``content_sha256`` is the SHA-256 of a ``.gz`` file's decompressed bytes, used to
    accept a re-compressed copy (e.g. a distribution package) of the same data. A file is accepted if
    it matches its ``sha256`` (or, failing a known SHA-256, its ``md5``) or its ``content_sha256``.
    ``None`` everywhere means no checksum is published: the first download is recorded (its SHA-256
    goes into the dataset's ``.verified`` file) and later runs are checked against that record.
    """

    name: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    content_sha256: str | None = None
    note: str = ""
    manual: bool = False  # cannot be fetched by a plain HTTP client: the user places it (module MANUAL says how)

    @property
    def url(self) -> str | None:
        return self.urls[0] if self.urls else None

    def with_urls(self, *urls: str) -> FileSpec:
        from dataclasses import replace

        return replace(self, urls=tuple(urls))


# --------------------------------------------------------------------------------------- checksums

def file_digest(path: Path | str, algorithm: str = "sha256", *, gunzipped: bool = False) -> str:
    digest = hashlib.new(algorithm)
    opener = gzip.open if gunzipped else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path | str, sha256: str | None = None, *, md5: str | None = None,
           size: int | None = None) -> Path:
    """Raise :class:`ChecksumError` (or ``FileNotFoundError``) unless ``path`` matches every digest given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if size is not None and path.stat().st_size != size:
        raise ChecksumError(f"{path}: size {path.stat().st_size} bytes, expected {size}")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(path, algorithm)
            if got.lower() != expected.lower():
                raise ChecksumError(f"{path}: {algorithm} {got} does not match the published {expected}")
    return path


def verify_spec(path: Path | str, spec: FileSpec) -> str:
    """Check ``path`` against a :class:`FileSpec`; return how it was verified ('sha256', 'md5', ...).

    Returns ``'none'`` when the spec publishes no checksum (the caller records the file's SHA-256).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (dataset file {spec.name!r})")
    errors = []
    if spec.sha256 or spec.md5:
        try:
            verify(path, spec.sha256, md5=None if spec.sha256 else spec.md5,
                   size=spec.size if not spec.content_sha256 else None)
            return "sha256" if spec.sha256 else "md5"
        except ChecksumError as error:
            errors.append(str(error))
    if spec.content_sha256:
        try:
            got = file_digest(path, "sha256", gunzipped=True)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            got = f"unreadable ({error})"
        if got == spec.content_sha256:
            return "content_sha256"
        errors.append(f"{path}: SHA-256 of the decompressed content {got} does not match {spec.content_sha256}")
    if errors:
        raise ChecksumError("; ".join(errors))
    if path.stat().st_size == 0:
        # Without a published checksum, the SHA-256 recorded now is all later checks compare with:
        # an empty file (a failed transfer, a placeholder) must not become the reference.
        raise ChecksumError(f"{path}: empty file for dataset file {spec.name!r}, which has no published "
                            "checksum to tell a good copy; delete it and fetch again")
    return "none"


# ---------------------------------------------------------------------------------------- download

def _progress_bar(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, leave=False)


_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


def _transfer(url: str, part: Path, *, timeout: float, progress: bool, name: str) -> None:
    """One attempt: append the rest of ``url`` to ``part`` (Range request when ``part`` is non-empty)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the part file is already complete
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # server ignored the Range header: start over
            have = 0
        elif have and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                have = 0  # unexpected range: start over rather than splice wrong bytes
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        received = 0
        with open(part, "ab" if have else "wb") as out, \
                _progress_bar(total, have, name, progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if length is not None and received < int(length):
            raise http.client.IncompleteRead(b"", int(length) - received)


def fetch(url: str | Sequence[str], dest: Path | str, sha256: str | None = None, *, md5: str | None = None,
          size: int | None = None, retries: int = 5, backoff: float = 1.0, progress: bool = True,
          timeout: float = 60.0, sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download ``url`` (or the first working of several mirrors) to ``dest``, verified and atomic.

    Resumes from ``dest.part`` if present. Retries network errors and 5xx / 429 answers up to
    ``retries`` times per mirror, waiting ``backoff * 2**attempt`` seconds. ``dest`` is created only
    by renaming the verified part file. Raises :class:`ChecksumError` (part file removed) or
    :class:`DownloadError`; both name the file.
    """
    dest = Path(dest)
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise DownloadError(f"{dest.name}: no URL to download it from")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures, attempts = [], 0
    for mirror in urls:
        resumed_from_old_part = part.exists() and part.stat().st_size > 0
        for attempt in range(retries + 1):
            attempts += 1
            try:
                _transfer(mirror, part, timeout=timeout, progress=progress, name=dest.name)
            except urllib.error.HTTPError as error:
                failures.append(f"{mirror}: HTTP {error.code} {error.reason}")
                if error.code not in _RETRYABLE_HTTP:
                    break
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as error:
                failures.append(f"{mirror}: {type(error).__name__}: {error}")
                if isinstance(getattr(error, "reason", None), socket.gaierror):
                    break  # host name does not resolve (offline): retrying this mirror cannot help
            else:
                try:
                    verify(part, sha256, md5=None if sha256 else md5, size=size)
                except ChecksumError as error:
                    part.unlink(missing_ok=True)
                    if resumed_from_old_part:  # the old part may have been the corrupt bit: once more, fresh
                        resumed_from_old_part = False
                        failures.append(f"{mirror}: resumed file failed verification; downloading afresh")
                        continue
                    detail = str(error).replace(f"{part}: ", "")
                    raise ChecksumError(f"{dest.name} downloaded from {mirror}: {detail}; the download was "
                                        "discarded") from None
                os.replace(part, dest)
                return dest
            if attempt < retries:
                sleep(backoff * 2 ** attempt)
    kept = f" (partial data kept in {part} for resuming)" if part.exists() else ""
    raise DownloadError(f"{dest.name}: download failed after {attempts} attempt(s) from {len(urls)} URL(s)"
                        f"{kept}: " + "; ".join(failures[-4:]))


# ---------------------------------------------------------------------------------------- archives

def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    if ".." in posix.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the extraction directory")
    return posix


def _link_escapes(member: PurePosixPath, target: str, *, hard: bool) -> bool:
    target_path = PurePosixPath(target.replace("\\", "/"))
    if target_path.is_absolute():
        return True
    base = PurePosixPath() if hard else member.parent  # hard links are relative to the archive root
    depth = 0
    for part in (base / target_path).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def check_archive(archive: Path | str) -> list[str]:
    """Member names of a zip / tar archive; raises :class:`UnsafeArchiveError` for unsafe members."""
    archive = Path(archive)
    names = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                member = _check_member_name(info.filename, archive)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    target = handle.read(info).decode("utf-8", "replace")
                    if _link_escapes(member, target, hard=False):
                        raise UnsafeArchiveError(f"{archive}: symlink {info.filename!r} -> {target!r} escapes "
                                                 "the extraction directory")
                names.append(info.filename)
        return names
    try:
        handle = tarfile.open(archive)
    except tarfile.TarError as error:
        raise UnsafeArchiveError(f"{archive}: not a zip or tar archive ({error})") from None
    with handle:
        try:
            members = handle.getmembers()
        except (tarfile.TarError, EOFError, OSError) as error:
            raise UnsafeArchiveError(f"{archive}: damaged archive ({type(error).__name__}: {error})") from None
        for info in members:
            member = _check_member_name(info.name, archive)
            if info.issym() or info.islnk():
                if _link_escapes(member, info.linkname, hard=info.islnk()):
                    kind = "hard link" if info.islnk() else "symlink"
                    raise UnsafeArchiveError(f"{archive}: {kind} {info.name!r} -> {info.linkname!r} escapes "
                                             "the extraction directory")
            elif not (info.isfile() or info.isdir()):
                raise UnsafeArchiveError(f"{archive}: member {info.name!r} is a device or fifo")
            names.append(info.name)
    return names


def safe_extract(archive: Path | str, dest: Path | str) -> list[Path]:
    """Unpack ``archive`` into ``dest``; return the top-level paths created.

    Every member is checked first (:func:`check_archive`); the archive is unpacked into a temporary
    directory inside ``dest`` and each top-level entry is then renamed into place (replacing an older
    copy of the same entry). Nothing is left in ``dest`` if extraction fails.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    check_archive(archive)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}.", dir=dest))
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as handle:
                    for info in handle.infolist():
                        if stat.S_ISLNK(info.external_attr >> 16):
                            link = tmp / info.filename
                            link.parent.mkdir(parents=True, exist_ok=True)
                            os.symlink(handle.read(info).decode(), link)
                        else:
                            handle.extract(info, tmp)
            else:
                with tarfile.open(archive) as handle:
                    handle.extractall(tmp, filter="data")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
            raise UnsafeArchiveError(f"{archive}: extraction failed ({type(error).__name__}: {error})") from None
        created = []
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
            created.append(target)
        return created
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gunzip(path: Path | str, dest: Path | str) -> Path:
    """Decompress a ``.gz`` file to ``dest`` atomically (temp file, then rename)."""
    path, dest = Path(path), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as source:
            shutil.copyfileobj(source, out, CHUNK)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except (OSError, EOFError) as error:
        raise ChecksumError(f"{path}: not a valid gzip file ({error})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def find_file(name: str, roots: Iterable[Path]) -> Path | None:
    """The first file called ``name`` under any of ``roots`` (searched recursively)."""
    for root in roots:
        root = Path(root)
        if root.is_file() and root.name == name:
            return root
        if root.is_dir():
            direct = root / name
            if direct.is_file():
                return direct
            for candidate in sorted(root.rglob(name)):
                if candidate.is_file():
                    return candidate
    return None


def copy_atomic(source: Path | str, target: Path | str) -> None:
    """Copy ``source`` to ``target`` atomically (temp file in the target's directory, then rename)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def gunzip_files(dataset_dir: Path | str, specs: Iterable[FileSpec]) -> None:
    """Decompress each ``<dataset_dir>/<spec.name>`` ending in ``.gz`` next to itself (if not done yet)."""
    for spec in specs:
        packed = Path(dataset_dir) / spec.name
        if packed.is_file() and packed.name.endswith(".gz"):
            raw = packed.with_suffix("")
            if not raw.is_file() or raw.stat().st_mtime_ns < packed.stat().st_mtime_ns:
                gunzip(packed, raw)


def extract_once(archive: Path | str, dest: Path | str, marker: str) -> None:
    """``safe_extract`` unless ``dest/marker`` (a path the archive creates) already exists."""
    if not (Path(dest) / marker).exists():
        safe_extract(archive, dest)
        if not (Path(dest) / marker).exists():
            raise UnsafeArchiveError(f"{archive}: expected {marker!r} inside the archive, not found")
