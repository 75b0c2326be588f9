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
    st = os.statvfs(directory)
    todo = st.f_bavail * st.f_frsize - leave
    with open(path, "wb") as f:
        try:
            while todo > 0 or not leave:  # leave nothing: write until the disk says full
                f.write(b"\0" * min(65536, todo if leave else 65536))
                f.flush()
                todo -= 65536
        except OSError:
            pass  # full
    return path
