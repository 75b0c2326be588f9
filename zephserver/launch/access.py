"""Who may launch something: an app's ``allow`` and the agent's AGENT_ALLOW.

``{"groups": [...], "users": [...], "staff": True}``: a user may if they are named, are
in one of the Django groups, or (with ``staff``) are staff. A superuser always may. No
rule at all means every logged-in user (an app's default).
"""

from dataclasses import dataclass
from typing import Any

KEYS = frozenset({"groups", "users", "staff"})


@dataclass(frozen=True)
class Access:
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    staff: bool = False

    def allows(self, user: Any) -> bool:
        """``user``: a task's UserInfo (username, is_staff, is_superuser, groups)."""
        return bool(user.is_superuser or (self.staff and user.is_staff)
                    or user.username in self.users or self.groups & set(user.groups))


EVERYONE = None  # no rule: every logged-in user


def parse_access(value: Any, where: str, problems: list[str]) -> Access | None:
    """An ``allow`` rule, or None for none; what is wrong goes to ``problems``."""
    if value is None:
        return EVERYONE
    if not isinstance(value, dict) or not set(value) <= KEYS:
        problems.append(f"{where} must be a dict with groups, users and/or staff, e.g. "
                        '{"groups": ["simulation"], "staff": True}')
        return EVERYONE
    names = {}
    for key in ("groups", "users"):
        got = value.get(key, [])
        if not isinstance(got, list | tuple) or not all(isinstance(g, str) and g for g in got):
            problems.append(f"{where}.{key} must be a list of names")
            got = []
        names[key] = frozenset(got)
    staff = value.get("staff", False)
    if not isinstance(staff, bool):
        problems.append(f"{where}.staff must be true or false")
        staff = False
    return Access(names["groups"], names["users"], staff)


def allowed(rule: Access | None, user: Any) -> bool:
    return rule is EVERYONE or rule.allows(user)
