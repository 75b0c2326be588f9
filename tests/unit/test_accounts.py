"""Who work runs as: the settings checks that keep it from running as root by accident,
and what a run-as launch gets."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from zephserver.launch.accounts import Account, NoAccount, account_for, check


@pytest.fixture
def open_dir():
    """A directory every account can reach (pytest's own live under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="zacc", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_root_daemon_must_say_who_work_runs_as(open_dir):
    problems = check({"app 'a'": None, "app 'b'": "root", "agent processes": None}, {},
                     [str(open_dir)], euid=0)
    assert problems == [
        "app 'a' would run as root: give it run_as (an account, '$user', or 'root' on "
        "purpose), or set RUN_AS",
        "agent processes would run as root: give it run_as (an account, '$user', or 'root' "
        "on purpose), or set RUN_AS"]


def test_accounts_users_and_directories_are_checked(open_dir):
    closed = open_dir / "closed"
    closed.mkdir(mode=0o700)
    problems = check({"app 'x'": "no-such-account", "app 'y'": "$user",
                      "app 'z'": "nobody"}, {"eve": "root"}, [str(closed / "jobs")], euid=0)
    assert "app 'x': there is no Unix account 'no-such-account'" in problems
    assert any(p.startswith("USER_MAP: eve maps to root") for p in problems)
    assert f"app 'z': account nobody cannot reach {closed / 'jobs'} ({closed} is closed " \
           "to it)" in problems


def test_a_daemon_not_started_as_root_runs_work_as_itself(open_dir):
    me = Account.named("nobody")
    problems = check({"app 'a'": None, "app 'b'": "daemon", "app 'c'": "$user"},
                     {"alice": "daemon"}, [str(open_dir)], euid=me.uid)
    assert problems == [
        "app 'b': run_as 'daemon' needs the daemon started as root (it runs as nobody)",
        "app 'c': run_as '$user' needs the daemon started as root"]


def test_what_a_launch_runs_as():
    assert account_for(None, "alice", {}) is None
    assert account_for("nobody", "alice", {}).uid == Account.named("nobody").uid
    assert account_for("$user", "alice", {"alice": "daemon"}).name == "daemon"
    with pytest.raises(NoAccount, match=r"^user bob has no Unix account to run as"):
        account_for("$user", "bob", {"alice": "daemon"})
    daemon = Account.named("daemon")
    assert daemon.switch() == ["/usr/bin/setpriv", f"--reuid={daemon.uid}",
                               f"--regid={daemon.gid}", "--init-groups", "--"]
    assert daemon.env() == {"HOME": daemon.home, "USER": "daemon", "LOGNAME": "daemon"}


def test_an_account_is_looked_up_again_once_its_entry_is_old(monkeypatch):
    from zephserver.launch import accounts

    looked = []
    real = accounts.pwd.getpwnam
    monkeypatch.setattr(accounts.pwd, "getpwnam", lambda name: looked.append(name) or real(name))
    accounts._known.clear()
    assert Account.named("nobody") == Account.named("nobody")  # a burst of launches: once
    assert looked == ["nobody"]
    accounts._known["nobody"] = (accounts._known["nobody"][0],
                                 accounts._known["nobody"][1] - accounts.ACCOUNT_CACHE_TTL)
    Account.named("nobody")
    assert looked == ["nobody", "nobody"]
    with pytest.raises(KeyError):  # (a missing one is never remembered)
        Account.named("no-such-account-zeph")
    with pytest.raises(KeyError):
        Account.named("no-such-account-zeph")
    assert looked.count("no-such-account-zeph") == 2
