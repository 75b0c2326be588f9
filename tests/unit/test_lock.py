"""Whose lock it is (zephserver/lock.py): a live process is a zephserver by what it runs,
its interpreter's options passed over, never by the arguments given to what it runs."""

import pytest

from zephserver.lock import _program

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("argv", "program"), [
    (["/v/bin/python", "-X", "no_debug_ranges", "-OO", "/v/bin/zephserver-start", "-s", "x"],
     ["/v/bin/python", "-X", "no_debug_ranges", "-OO", "/v/bin/zephserver-start"]),
    (["/usr/bin/python3.11", "-m", "zephserver", "start"],
     ["/usr/bin/python3.11", "-m", "zephserver"]),
    (["/usr/bin/python3", "main.py", "--settings", "x"], ["/usr/bin/python3", "main.py"]),
    (["/v/bin/zephserver-start", "--settings", "/etc/zephserver/settings.py"],
     ["/v/bin/zephserver-start"]),
    (["/usr/bin/vim", "/etc/zephserver/settings.py"], ["/usr/bin/vim"]),
])
def test_a_process_is_known_by_what_it_runs(argv, program):
    assert _program(argv) == program
