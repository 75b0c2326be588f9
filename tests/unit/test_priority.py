from zephserver.launch.process import autogroup_level


def test_the_autogroup_shown_gives_its_niceness():
    assert autogroup_level("/autogroup-42 nice 5\n", own=0) == 5


def test_the_default_autogroup_shows_nothing_and_weighs_as_the_daemon_itself():
    """A daemon started under init, in a session older than autogroups: the kernel shows
    nothing; its threads weigh by their own niceness, so jobs' autogroups go that far
    below it (it once raised IndexError here, and the jobs service never started)."""
    assert autogroup_level("", own=3) == 3


def test_an_unreadable_autogroup_means_none():
    assert autogroup_level("garbage here\n", own=0) is None
