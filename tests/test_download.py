"""Downloads over a loopback HTTP server: resume, retry, verification, atomicity; safe archive extraction."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from fake_datasets import LoopbackServer, sha256, tar_bytes, zip_bytes, zip_with_symlink
from taskbal.data.download import (
    ChecksumError,
    DownloadError,
    FileSpec,
    UnsafeArchiveError,
    fetch,
    safe_extract,
    verify,
    verify_spec,
)

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


@pytest.fixture
def server():
    with LoopbackServer() as running:
        yield running


def no_sleep(seconds):
    no_sleep.calls.append(seconds)


def test_fetch_writes_verified_file_and_no_part(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    dest = fetch(url, tmp_path / "file.bin", sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "file.bin.part").exists()


def test_corrupted_download_raises_naming_file_and_leaves_nothing(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    server.faults["/data/file.bin"] = ["corrupt"]
    with pytest.raises(ChecksumError, match="file.bin") as info:
        fetch(url, tmp_path / "file.bin", sha256(PAYLOAD), progress=False, retries=0)
    assert sha256(PAYLOAD) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_is_retried_and_resumed_with_range(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    server.faults["/data/file.bin"] = ["drop", "drop"]
    no_sleep.calls = []
    dest = fetch(url, tmp_path / "file.bin", sha256(PAYLOAD), progress=False, retries=3, backoff=0.5, sleep=no_sleep)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for p, r in server.requests]
    assert ranges[0] is None
    assert ranges[1] == f"bytes={len(PAYLOAD) // 2}-"  # resumed where the dropped connection stopped
    assert ranges[2].startswith("bytes=") and int(ranges[2][6:-1]) > len(PAYLOAD) // 2
    assert no_sleep.calls == [0.5, 1.0]  # exponential backoff


def test_existing_part_file_is_resumed(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:123_456])
    fetch(url, tmp_path / "file.bin", sha256(PAYLOAD), progress=False)
    assert server.requests == [("/data/file.bin", "bytes=123456-")]
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    server.faults["/data/file.bin"] = ["no-range"]
    (tmp_path / "file.bin.part").write_bytes(b"x" * 1000)
    fetch(url, tmp_path / "file.bin", sha256(PAYLOAD), progress=False)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_corrupt_part_file_is_discarded_and_downloaded_afresh(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    (tmp_path / "file.bin.part").write_bytes(b"\0" * 5000)  # wrong bytes: resume gives a bad file
    fetch(url, tmp_path / "file.bin", sha256(PAYLOAD), progress=False)
    assert (tmp_path / "file.bin").read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data/file.bin", None)


def test_server_errors_exhaust_retries_with_clear_error(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    server.faults["/data/file.bin"] = ["500"] * 3
    no_sleep.calls = []
    with pytest.raises(DownloadError, match=r"file.bin.*3 attempt\(s\).*HTTP 500"):
        fetch(url, tmp_path / "file.bin", sha256(PAYLOAD), progress=False, retries=2, backoff=1.0, sleep=no_sleep)
    assert no_sleep.calls == [1.0, 2.0]
    assert not (tmp_path / "file.bin").exists()


def test_missing_file_is_not_retried_and_next_mirror_used(server, tmp_path):
    good = server.add("mirror2/file.bin", PAYLOAD)
    fetch([server.url + "/mirror1/file.bin", good], tmp_path / "file.bin", sha256(PAYLOAD), progress=False,
          retries=4, sleep=no_sleep)
    assert [p for p, _ in server.requests] == ["/mirror1/file.bin", "/mirror2/file.bin"]


def test_md5_only_verification(server, tmp_path):
    url = server.add("data/file.bin", PAYLOAD)
    fetch(url, tmp_path / "file.bin", None, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    with pytest.raises(ChecksumError, match="md5"):
        verify(tmp_path / "file.bin", md5="0" * 32)
    with pytest.raises(ChecksumError, match="size"):
        verify(tmp_path / "file.bin", size=1)


def test_verify_spec_accepts_recompressed_gzip_by_content(tmp_path):
    import gzip

    raw = b"IDX" * 1000
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=123))
    upstream = gzip.compress(raw, compresslevel=9, mtime=0)
    spec = FileSpec("a.gz", sha256=sha256(upstream), content_sha256=sha256(raw))
    assert path.read_bytes() != upstream
    assert verify_spec(path, spec) == "content_sha256"
    with pytest.raises(ChecksumError, match="decompressed"):
        verify_spec(path, FileSpec("a.gz", sha256=sha256(upstream), content_sha256=sha256(raw + b"!")))


# ------------------------------------------------------------------------------------------ archives

def test_safe_extract_zip_and_tar(tmp_path):
    members = {"top/a.txt": b"a", "top/sub/b.txt": b"b"}
    for name, data in (("x.zip", zip_bytes(members)), ("x.tar.gz", tar_bytes(members)),
                       ("x.tar", tar_bytes(members, mode="w"))):
        archive = tmp_path / name
        archive.write_bytes(data)
        out = tmp_path / f"out-{name}"
        safe_extract(archive, out)
        assert (out / "top/sub/b.txt").read_bytes() == b"b"
        assert sorted(p.name for p in out.iterdir()) == ["top"]  # no temporary directory left


@pytest.mark.parametrize("bad", ["../evil.txt", "top/../../evil.txt", "/abs/evil.txt"])
def test_path_traversal_rejected_and_nothing_written(tmp_path, bad):
    for name, data in (("t.zip", zip_bytes({"ok.txt": b"1", bad: b"x"})),
                       ("t.tar.gz", tar_bytes({"ok.txt": b"1", bad: b"x"}))):
        archive = tmp_path / name
        archive.write_bytes(data)
        out = tmp_path / "out" / name
        with pytest.raises(UnsafeArchiveError, match=name):
            safe_extract(archive, out)
        assert not out.exists() or list(out.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def test_escaping_symlinks_and_hardlinks_rejected(tmp_path):
    cases = {
        "sym.tar.gz": tar_bytes({"d/a.txt": b"a"}, links={"d/link": ("sym", "../../outside")}),
        "abs.tar.gz": tar_bytes({"d/a.txt": b"a"}, links={"d/link": ("sym", "/etc/passwd")}),
        "hard.tar.gz": tar_bytes({"d/a.txt": b"a"}, links={"d/hard": ("hard", "../x")}),
        "sym.zip": zip_with_symlink({"d/a.txt": b"a"}, "d/link", "../../outside"),
    }
    for name, data in cases.items():
        archive = tmp_path / name
        archive.write_bytes(data)
        out = tmp_path / "out" / name
        with pytest.raises(UnsafeArchiveError, match="escapes"):
            safe_extract(archive, out)
        assert not out.exists() or list(out.iterdir()) == []


def test_symlink_inside_target_is_allowed(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(tar_bytes({"d/a.txt": b"a"}, links={"d/link": ("sym", "a.txt")}))
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/d/link").read_bytes() == b"a"


def test_truncated_archive_leaves_nothing(tmp_path):
    data = tar_bytes({f"d/{i}.bin": os.urandom(5000) for i in range(5)})
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="cut.tar.gz"):
        safe_extract(archive, out)
    assert not out.exists() or list(out.iterdir()) == []
