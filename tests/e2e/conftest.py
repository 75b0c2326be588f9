import shutil

import pytest

from tests.support.daemon import DaemonProcess, short_tmpdir


@pytest.fixture
def workdir():
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons(request):
    """Create DaemonProcess objects; all are killed (process group) at teardown, and their
    output is printed when the test failed."""
    made: list[DaemonProcess] = []

    def make(settings, env=None) -> DaemonProcess:
        d = DaemonProcess(settings, env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
        print(f"--- daemon output ({d.settings}) ---\n{d.output}")
