"""The service contract and the context the manager hands to services that want one.

A service is any class with ``__init__(self)``, ``main(self)`` and ``disable(self)`` (the
original 2015 contract). ``Service`` below is an optional base that documents the extras:

- ``name``: short stable name used by ``get_service``, logs and control commands;
- ``requires``: names of services that must be RUNNING before this one starts;
- ``critical``: if it goes FATAL while the daemon boots, the daemon halts (exit 1);
- ``announces_ready``: the service calls ``self.ctx.ready()`` itself once it serves
  (otherwise it counts as RUNNING as soon as ``main`` is entered);
- ``bind_context(ctx)``: called once after ``__init__`` with a ServiceContext;
- ``reload(settings)`` and ``reloadable``: on ``zephserver-command reload`` (or SIGHUP)
  the service gets the new settings and applies the names listed in ``reloadable``;
- ``http_routes()``: the ``(pattern, RequestHandler class)`` pairs it serves on
  PORT_ZEPH; the web service assembles them (each handler gets it as ``service``).
"""

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from zephserver.config import Settings


class ServiceContext:
    """What a service may use of the daemon: settings, peers, readiness, the cluster."""

    def __init__(self, settings: "Settings", get: Callable[[str], Any],
                 ready: Callable[[], None], cluster: Any,
                 set_public_url: Callable[[str], None],
                 http_routes: Callable[[], list] = list,
                 services: Callable[[], list[dict]] = list,
                 hooks: Callable[[str], list[Callable]] = lambda name: []) -> None:
        self.settings = settings
        self._get = get
        self._ready = ready
        self.cluster = cluster
        self._set_public_url = set_public_url
        self._http_routes = http_routes
        self._services = services
        self._hooks = hooks

    def get(self, name: str) -> Any:
        """The RUNNING service named ``name``; raises ServiceUnavailable otherwise. Any thread."""
        return self._get(name)

    def ready(self) -> None:
        """Mark the calling service RUNNING (STARTING -> RUNNING). Any thread, non-blocking."""
        self._ready()

    def set_public_url(self, url: str) -> None:
        """Tell the daemon the URL it serves on (printed in the ready line)."""
        self._set_public_url(url)

    def http_routes(self) -> list[tuple[str, type]]:
        """Every service's ``http_routes()``, in SERVICE_LIST order."""
        return self._http_routes()

    def services(self) -> list[dict]:
        """Each service's name, state, restarts and last error (as zephserver-status)."""
        return self._services()

    def hooks(self, name: str) -> list[Callable]:
        """The method ``name`` of every RUNNING service that has one (``metric_families``)."""
        return self._hooks(name)


class Service:
    """Optional base class for services; subclasses override ``main`` and ``disable``."""

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    critical: ClassVar[bool] = False
    announces_ready: ClassVar[bool] = False
    reloadable: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.ctx: ServiceContext | None = None
        self._disabled = threading.Event()

    def bind_context(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def main(self) -> None:
        """Run until ``disable()``; the default just waits."""
        self._disabled.clear()
        self._disabled.wait()

    def disable(self) -> None:
        """Make ``main`` return soon. Idempotent, thread-safe, non-blocking."""
        self._disabled.set()

    def http_routes(self) -> list[tuple[str, type]]:
        """What this service serves over HTTP on PORT_ZEPH (none by default)."""
        return []
