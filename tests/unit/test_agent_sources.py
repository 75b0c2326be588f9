"""Procfiles and source archives: parsing, URL rules, refusing archives that would write
outside their directory."""

import io
import os
import tarfile
import threading
import zipfile

import pytest

from tests.support.archives import make_tar, make_zip
from zephserver.launch.procfile import ProcfileError, parse_procfile
from zephserver.launch.sources import (
    Cancelled,
    SourceError,
    archive_kind,
    check_url,
    fetch,
    unpack,
)


def test_procfile_rules():
    text = "# comment\n\nweb: gunicorn app:app --bind :$PORT\nworker:env A=1 python w.py  \n"
    assert parse_procfile(text) == {"web": "gunicorn app:app --bind :$PORT",
                                    "worker": "env A=1 python w.py"}
    for bad, words in [("web gunicorn", "line 1"), ("web: a\nweb: b", "given twice"),
                       ("# only a comment\n", "no process type"), ("we b: x", "line 1")]:
        with pytest.raises(ProcfileError, match=words):
            parse_procfile(bad)


def test_source_url_rules(tmp_path):
    assert check_url("https://example.com/app.zip", []) is None
    assert "http://" in check_url("ftp://example.com/app.zip", [])
    assert "AGENT_FILE_ROOTS" in check_url(f"file://{tmp_path}/a.zip", [])
    assert check_url(f"file://{tmp_path}/a.zip", [str(tmp_path)]) is None
    assert "AGENT_FILE_ROOTS" in check_url(f"file://{tmp_path}/../etc/passwd",
                                           [str(tmp_path)])


def test_zip_and_tar_unpack_with_executable_bits(tmp_path):
    z = make_zip(tmp_path / "a.zip", {"Procfile": "web: ./run", "run": "#!/bin/sh\n",
                                      "sub/x.txt": "x"}, {"run": 0o755})
    unpack(str(z), str(tmp_path / "z"), 10_000)
    assert (tmp_path / "z" / "sub" / "x.txt").read_text() == "x"
    assert os.access(tmp_path / "z" / "run", os.X_OK)
    t = make_tar(tmp_path / "a.tgz", {"Procfile": "web: x"})
    assert archive_kind(str(t)) == "tar"
    unpack(str(t), str(tmp_path / "t"), 10_000)
    assert (tmp_path / "t" / "Procfile").read_text() == "web: x"


def _tar_with(path, member, data=b""):
    with tarfile.open(path, "w:gz") as t:
        t.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize("make", [
    lambda p: make_zip(p, {"../evil": "x"}),
    lambda p: make_zip(p, {"/abs/evil": "x"}),
    lambda p: make_zip(p, {"link": "/etc/passwd"}, {"link": 0o120777}),
    lambda p: make_tar(p, {"../../evil": "x"}),
    lambda p: _tar_with(p, _info("dev", tarfile.CHRTYPE)),
    lambda p: _tar_with(p, _info("up", tarfile.SYMTYPE, "../../../etc")),
])
def test_archives_that_would_escape_are_refused(tmp_path, make):
    archive = make(tmp_path / "bad.archive")
    dest = tmp_path / "out" / "source"
    (tmp_path / "out").mkdir()
    with pytest.raises(SourceError) as err:
        unpack(str(archive), str(dest), 10_000)
    assert err.value.phase == "unpack failure"
    assert not dest.exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.archive", "out"]


def _info(name, kind, target=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_size_limits_and_magic(tmp_path):
    big = make_zip(tmp_path / "big.zip", {"f": "x" * 5000})
    with pytest.raises(SourceError, match="more than 1000 bytes"):
        unpack(str(big), str(tmp_path / "o"), 1000)
    page = tmp_path / "page.zip"
    page.write_text("<html>")
    with pytest.raises(SourceError, match="not a zip or tar"):
        fetch(page.as_uri(), str(tmp_path / "dl"), 10_000, 5, threading.Event())
    with pytest.raises(SourceError, match="over the limit"):
        fetch(big.as_uri(), str(tmp_path / "dl"), 100, 5, threading.Event())
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled):
        fetch(big.as_uri(), str(tmp_path / "dl"), 10_000, 5, cancelled)
    assert zipfile.is_zipfile(big)
