"""The Unix account a launch runs as, and the checks that keep work from running as root
by accident.

An app's ``run_as`` (else RUN_AS) names an account, ``"$user"`` (the owner's own account
through USER_MAP), or ``"root"`` on purpose; None is the daemon's own account, which a
daemon started as root may not use for work. The process gets the account's uid, primary
gid and supplementary groups (``setpriv --init-groups``, util-linux) and its HOME, USER
and LOGNAME; its job directory and log belong to it. The shim that waits for it stays
the daemon's, so exit statuses, re-adoption and the kill ladder work as before.
"""

import os
import pwd
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OWNER = "$user"
ROOT = "root"
SETPRIV = "/usr/bin/setpriv"
ACCOUNT_CACHE_TTL = 10.0  # seconds a looked-up account is trusted


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> "Account":
        """Raises KeyError if there is no such account. Remembered for a few seconds:
        every launch asks (on the job manager's thread), and each look-up opens and reads
        the account database through NSS."""
        now = time.monotonic()
        hit = _known.get(name)
        if hit is not None and now - hit[1] < ACCOUNT_CACHE_TTL:
            return hit[0]
        entry = pwd.getpwnam(name)
        account = cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
        if len(_known) > 1000:
            _known.clear()
        _known[name] = (account, now)
        return account

    def groups(self) -> list[int]:
        return os.getgrouplist(self.name, self.gid)

    def switch(self) -> list[str]:
        """What an argv is prefixed with to run as this account."""
        return [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                "--"]

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def own(self, *paths: str) -> None:
        """Give ``paths`` (and what is under a directory) to this account."""
        for path in paths:
            os.chown(path, self.uid, self.gid)
            if os.path.isdir(path):
                for top, dirs, files in os.walk(path):
                    for name in dirs + files:
                        os.chown(os.path.join(top, name), self.uid, self.gid,
                                 follow_symlinks=False)

    def can_reach(self, path: str) -> str | None:
        """The first directory on the way to ``path`` this account cannot enter, or None."""
        groups = set(self.groups())
        current = "/"
        for part in os.path.realpath(path).split(os.sep)[1:]:
            current = os.path.join(current, part)
            try:
                st = os.stat(current)
            except OSError:
                return None  # not made yet: made by the daemon, then given to the account
            if not stat.S_ISDIR(st.st_mode):
                break
            if self.uid == 0:
                continue
            bit = (stat.S_IXUSR if st.st_uid == self.uid else
                   stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH)
            if not st.st_mode & bit:
                return current
        return None


class NoAccount(Exception):
    """A user with no Unix account to run as (USER_MAP)."""


_known: dict[str, tuple[Account, float]] = {}  # name -> (account, when looked up)


def account_for(run_as: str | None, owner: str, user_map: Mapping[str, str]
                ) -> Account | None:
    """Who a launch by ``owner`` runs as (None: the daemon's own account, no switch).

    Raises:
        NoAccount: ``$user`` for an owner USER_MAP does not name.
        KeyError: the account does not exist (any more).
    """
    if run_as is None:
        return None
    name = user_map.get(owner) if run_as == OWNER else run_as
    if name is None:
        raise NoAccount(f"user {owner} has no Unix account to run as (USER_MAP)")
    account = Account.named(name)
    return None if account.uid == os.geteuid() else account


def check(runs: Mapping[str, str | None], user_map: Mapping[str, str],
          dirs: list[str], euid: int | None = None) -> list[str]:
    """What is wrong with who runs what: ``runs`` maps what launches (an app, the agent)
    to its run_as; ``dirs`` must be reachable by every account that work runs as."""
    euid = os.geteuid() if euid is None else euid
    me = pwd.getpwuid(euid).pw_name
    problems, accounts = [], {}
    for user, name in user_map.items():
        if name == ROOT:
            problems.append(f"USER_MAP: {user} maps to root (work never runs as root by a "
                            "user's mapping; give the app run_as 'root' on purpose instead)")
        else:
            accounts[name] = f"USER_MAP ({user})"
    for what, run_as in runs.items():
        if run_as is None:
            if euid == 0:
                problems.append(f"{what} would run as root: give it run_as (an account, "
                                "'$user', or 'root' on purpose), or set RUN_AS")
        elif run_as == OWNER:
            if euid != 0:
                problems.append(f"{what}: run_as '$user' needs the daemon started as root")
            if not user_map:
                problems.append(f"{what}: run_as '$user' needs USER_MAP (user -> account)")
        elif euid != 0 and run_as != me:
            problems.append(f"{what}: run_as {run_as!r} needs the daemon started as root "
                            f"(it runs as {me})")
        elif run_as != ROOT:
            accounts.setdefault(run_as, what)
    for name, where in accounts.items():
        try:
            account = Account.named(name)
        except KeyError:
            problems.append(f"{where}: there is no Unix account {name!r}")
            continue
        for directory in dirs:
            blocked = account.can_reach(directory)
            if blocked:
                problems.append(f"{where}: account {name} cannot reach {directory} "
                                f"({blocked} is closed to it)")
    if any(r is not None and r != ROOT for r in runs.values()) and euid == 0 \
            and not os.access(SETPRIV, os.X_OK):
        problems.append(f"run_as needs {SETPRIV} (Debian's util-linux)")
    return problems


def effective(run_as: Any, default: str | None) -> str | None:
    return run_as if run_as is not None else default
