"""What a task is (the original contract) and who may call it.

A task is a class with ``__init__(self, request)``, ``main(self)`` and ``interrupt(self)``.
``main`` returns the JSON-RPC result or raises ``TaskError``; it may instead return a
``concurrent.futures.Future`` of the result (an answer another service gives later), which
frees the task thread while it waits. Access is stated by a class
decorator; a task without one requires a logged-in user.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from zephserver.errors import RpcCode, RpcError

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class UserInfo:
    """The authenticated user as tasks see it (immutable, safe to share across threads)."""

    id: int | None
    username: str
    is_staff: bool = False
    is_superuser: bool = False
    groups: tuple[str, ...] = ()  # Django group names (apps' and the agent's ``allow``)

    def __post_init__(self) -> None:  # (a list when it crossed the cluster bus as JSON)
        object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def is_authenticated(self) -> bool:
        return self.id is not None

    def to_json(self) -> dict:
        return {"id": self.id, "username": self.username, "is_staff": self.is_staff}


ANONYMOUS = UserInfo(None, "", False, False)


class Request(dict):
    """The original request dict (``data``, ``cid``, ``user``, ``task``) with attribute access."""

    def __init__(self, data: Any, cid: str, user: UserInfo, task: str) -> None:
        super().__init__(data=data, cid=cid, user=user, task=task)

    @property
    def data(self) -> Any:
        return self["data"]

    @property
    def cid(self) -> str:
        return self["cid"]

    @property
    def user(self) -> UserInfo:
        return self["user"]

    @property
    def task(self) -> str:
        return self["task"]


class TaskError(RpcError):
    """An error meant for the user; ``code`` defaults to TASK_FAILED (-32010)."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(RpcCode.TASK_FAILED if code is None else code, message, data)


class Task:
    """Optional base class: keeps the request, offers param checks and a cancelled flag.

    ``PARAMS`` declares the named params (``name: type`` or ``name: (type, default)``);
    ``self.params()`` checks the request against it, and the reference page lists it
    with the class docstring (a summary line, then ``Result:`` and ``Errors:`` lines).
    """

    PARAMS: ClassVar[dict[str, Any]] = {}
    # A task open to anyone that answers from memory (no database, nothing that blocks)
    # may say so: it then runs on the loop thread, without two thread hand-offs.
    INLINE: ClassVar[bool] = False
    # The requests of one batch for a task that says IN_ORDER run one after another on
    # one task thread, in the order asked (jobs.submit: a burst's ids follow it; spread
    # over task threads, one preempted between its checks and its post was overtaken).
    IN_ORDER: ClassVar[bool] = False

    def __init__(self, request: Request) -> None:
        self.request = request
        self.cancelled = False

    def main(self) -> Any:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def interrupt(self) -> None:
        """Ask a running ``main`` to stop soon (long loops check ``self.cancelled``)."""
        self.cancelled = True

    def params(self, **fields: type | tuple[type, ...]) -> dict:
        """The named params (``fields``, else the class's ``PARAMS``), type-checked;
        ``name=(type, default)`` makes one optional.

        Raises:
            TaskError: -32602 naming the first missing, unknown or mistyped field.
        """
        fields = fields or self.PARAMS
        data = self.request.data
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise TaskError("params must be an object of named fields", RpcCode.INVALID_PARAMS)
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise TaskError(f"unknown param {unknown[0]!r}", RpcCode.INVALID_PARAMS,
                            {"field": unknown[0]})
        out = {}
        for name, spec in fields.items():
            if isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[1], type):
                kind, default = spec
                value = data.get(name, default)
            elif name not in data:
                raise TaskError(f"missing param {name!r}", RpcCode.INVALID_PARAMS,
                                {"field": name})
            else:
                kind, value = spec, data[name]
            if value is not None and (not isinstance(value, kind) or
                                      (isinstance(value, bool) and kind in (int, float))):
                raise TaskError(f"param {name!r} has the wrong type", RpcCode.INVALID_PARAMS,
                                {"field": name})
            out[name] = value
        return out


# --- access decorators ------------------------------------------------------------------

AccessTest = Callable[[UserInfo], bool]


def user_passes_test(test: AccessTest, message: str = "forbidden") -> Callable[[T], T]:
    """Allow callers for whom ``test(user)`` is true; others get -32002 (or -32001 if anonymous)."""
    def decorate(cls: T) -> T:
        cls._zeph_access = (test, message)  # type: ignore[attr-defined]
        return cls
    return decorate


def allow_anonymous(cls: T) -> T:
    cls._zeph_access = None  # type: ignore[attr-defined]
    return cls


def login_required(cls: T) -> T:
    return user_passes_test(lambda user: True)(cls)


def staff_required(cls: T) -> T:
    return user_passes_test(lambda user: user.is_staff, "staff only")(cls)


def check_access(task_cls: type, user: UserInfo) -> None:
    """Raise the JSON-RPC error a caller gets if it may not run ``task_cls``."""
    access = getattr(task_cls, "_zeph_access", (lambda user: True, "forbidden"))
    if access is None:
        return
    if not user.is_authenticated:
        raise RpcError(RpcCode.NOT_AUTHENTICATED, "not authenticated: log in or send a token")
    test, message = access
    if not test(user):
        raise RpcError(RpcCode.FORBIDDEN, message)
