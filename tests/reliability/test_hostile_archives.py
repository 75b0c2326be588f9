"""Hostile source archives through the real agent: each ends in "unpack failure" with a
reason, writes nothing outside its process directory, and the daemon keeps serving."""

import io
import os
import shutil
import tarfile
import zipfile

import pytest

from tests.support.archives import ArchiveServer, make_tar, make_zip
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.poll import poll_until
from tests.support.sessions import rest
from tests.support.web import start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROCFILE = "web: exec sleep 600\n"


def tar_of(path, members: list[tuple[tarfile.TarInfo, bytes]]):
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def hostile(root, outside) -> dict[str, object]:
    """name -> archive file (the ``outside`` directory is what they aim at)."""
    bomb = root / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Procfile", PROCFILE)
        z.writestr("zeros", b"\0" * (64 << 20))  # 64 MiB in about 64 KiB
    return {
        "zip slip": make_zip(root / "slip.zip", {"Procfile": PROCFILE,
                                                 f"../../../../..{outside}/slip": "x"}),
        "absolute zip entry": make_zip(root / "abs.zip", {"Procfile": PROCFILE,
                                                          f"{outside}/abs": "x"}),
        "zip symlink": make_zip(root / "link.zip", {"Procfile": PROCFILE,
                                                    "link": str(outside)},
                                {"link": 0o120777}),
        "tar slip": make_tar(root / "slip.tgz", {"Procfile": PROCFILE,
                                                 f"../../../..{outside}/tarslip": "x"}),
        "tar symlink then a file through it": tar_of(root / "via.tgz", [
            (member("Procfile"), PROCFILE.encode()),
            (member("d", tarfile.SYMTYPE, str(outside)), b""),
            (member("d/through"), b"x")]),
        "tar hard link to a file outside": tar_of(root / "hard.tgz", [
            (member("Procfile"), PROCFILE.encode()),
            (member("passwd", tarfile.LNKTYPE, "/etc/passwd"), b"")]),
        "tar device": tar_of(root / "dev.tgz", [(member("Procfile"), PROCFILE.encode()),
                                                (member("null", tarfile.CHRTYPE), b"")]),
        "tar fifo": tar_of(root / "fifo.tgz", [(member("Procfile"), PROCFILE.encode()),
                                               (member("pipe", tarfile.FIFOTYPE), b"")]),
        "zip bomb": bomb,
    }


def test_hostile_archives_write_nothing_outside(figure):
    work = short_tmpdir("zh")
    outside = work / "outside"
    outside.mkdir()
    (work / "files").mkdir()
    archives = hostile(work / "files", outside)
    files = ArchiveServer(work / "files")
    daemon = start_with_users(write_settings(
        work, AGENT_FILE_ROOTS=[str(work / "files")], AGENT_MAX_UNPACKED=16 << 20,
        AGENT_ALLOW=None,
        LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"),
        child_env())
    token = daemon.tokens["alice"]
    try:
        for i, (what, path) in enumerate(archives.items()):
            status, created, _ = rest("POST", daemon.url + "/agent/create-process", token,
                                      {"app": f"hostile{i}", "node": "n", "process_type": "web",
                                       "source_url": f"{files.url}/{os.path.basename(path)}"})
            assert status == 201, created

            def ended(slug=created["slug"]):
                _, doc, _ = rest("GET", daemon.url + f"/agent/process-status/{slug}", token)
                return doc if doc["state"] not in ("pending", "downloading", "unpacking") \
                    else None

            doc = poll_until(ended, 30, what=f"{what} unpacked or refused")
            assert doc["state"] == "unpack failure", (what, doc)
            assert doc["state_reason"], (what, doc)  # a reason the owner can read
        assert os.listdir(outside) == []  # nothing written where they aimed
        assert not (work / "slip").exists()
        leftovers = [p for p in work.iterdir()
                     if p.name not in {"outside", "files", "var", "settings.py", "zephserver.lock",
                                       "zephserver.sock"}]
        assert leftovers == [], leftovers
        status, _, _ = rest("GET", daemon.url + "/agent/list-processes", token)
        assert status == 200  # still serving
        figure(f"{len(archives)} hostile archives ({', '.join(archives)}): all 'unpack "
               "failure', nothing written outside")
    finally:
        daemon.cli("zephserver-stop")
        daemon.close()
        files.close()
        shutil.rmtree(work, ignore_errors=True)
