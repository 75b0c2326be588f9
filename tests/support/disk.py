"""A small filesystem of the test's own (a tmpfs; needs root), and filling it."""

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.daemon import short_tmpdir


@contextlib.contextmanager
def small_data_dir(size: str = "24m") -> Iterator[Path]:
    """A work folder whose ``var`` (DATA_DIR) is a tmpfs of ``size``; unmounted and
    removed on exit, even when the test failed half way."""
    work = short_tmpdir()
    data = work / "var"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(data)],
                   check=True)
    try:
        yield work
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Take the free bytes of ``directory``'s filesystem but ``leave``; the filler."""
    path = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    block = b"\0" * 65536
    with open(path, "wb") as f:
        try:
            while leave == 0 or f.tell() < free - leave:
                f.write(block[:max(1, min(len(block), free - leave - f.tell()))]
                        if leave else block)
                f.flush()
        except OSError:
            pass  # full
    return path
