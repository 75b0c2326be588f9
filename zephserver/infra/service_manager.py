"""Starts SERVICE_LIST in dependency order, restarts crashed services, stops them in reverse.

Each service has one ServiceRunner owning one named thread ("zeph-svc-<name>") that calls
``main()`` again after a crash, after a capped exponential backoff (event driven: the wait
is an Event a stop can cut short). Every state change goes through ``_set_state`` which
checks the one transition table, stamps the time, logs and wakes waiters.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from zephserver.backoff import BackoffPolicy, RestartTracker
from zephserver.clock import Clock, SystemClock
from zephserver.config import Settings, dependency_order, resolve_class, service_name
from zephserver.errors import HaltServer, ServiceUnavailable
from zephserver.infra.service import ServiceContext
from zephserver.states import ServiceState, check_service_transition

log = logging.getLogger(__name__)
S = ServiceState

_active_manager: "ServiceManager | None" = None


def get_service(name: str) -> Any:
    """The RUNNING service called ``name`` (short name or SERVICE_LIST path), from any thread.

    Raises:
        ServiceUnavailable: no daemon runs in this process, or the service is not RUNNING.
    """
    if _active_manager is None:
        raise ServiceUnavailable(f"service {name!r} is unavailable: no service manager runs")
    return _active_manager.get(name)


class ServiceRunner:
    """The life of one service: its instance, state, restart tracker and thread."""

    def __init__(self, manager: "ServiceManager", path: str, cls: type) -> None:
        self.manager = manager
        self.path = path
        self.cls = cls
        self.name = service_name(cls, path)
        self.requires: tuple[str, ...] = tuple(getattr(cls, "requires", ()) or ())
        self.critical = bool(getattr(cls, "critical", False))
        self.announces_ready = bool(getattr(cls, "announces_ready", False))
        self.instance: Any = None
        self.state = S.STOPPED
        self.since = manager.clock.time()
        self.ever_running = False
        self.last_error = ""
        self.tracker = RestartTracker(manager.policy)
        self.thread: threading.Thread | None = None
        self._stop_requested = False
        self._in_main = False
        self._wake = threading.Event()

    # -- called with manager.cond held ---------------------------------------------------

    def _set_state(self, new: ServiceState, reason: str) -> None:
        check_service_transition(self.state, new)
        old, self.state = self.state, new
        self.since = self.manager.clock.time()
        if new is S.RUNNING:
            self.ever_running = True
        level = logging.INFO if new in (S.RUNNING, S.FATAL, S.BACKOFF) else logging.DEBUG
        log.log(level, "service %s: %s -> %s: %s", self.name, old, new, reason)
        self.manager.cond.notify_all()

    def status(self) -> dict:
        return {"name": self.name, "path": self.path, "state": str(self.state),
                "restarts": self.tracker.restarts, "since": self.since,
                "last_error": self.last_error}

    # -- the runner thread ------------------------------------------------------------------

    def start(self) -> None:
        """STOPPED/FATAL -> STARTING and a fresh thread. Call with manager.cond held."""
        self._stop_requested = False
        self._wake.clear()
        self._set_state(S.STARTING, "starting")
        self.thread = threading.Thread(target=self._run, name=f"zeph-svc-{self.name}")
        self.thread.start()

    def _run(self) -> None:
        cond, clock = self.manager.cond, self.manager.clock
        while True:
            with cond:
                # Wait until what we require is RUNNING (dependency order), unless stopped.
                while not self._stop_requested and not self.manager._requirements_up(self):
                    cond.wait()
                if self._stop_requested:
                    self._set_state(S.STOPPED, "stopped before main() ran")
                    return
                self._in_main = True
                self.tracker.started(clock.monotonic())
                if not self.announces_ready:
                    self._set_state(S.RUNNING, "main() entered")
            error = self._call_main()
            with cond:
                self._in_main = False
                if self._stop_requested:
                    self._set_state(S.STOPPED, "main() returned after disable()")
                    return
                uptime = self.tracker.uptime(clock.monotonic())
                self.last_error = error or "main() returned while the daemon was not stopping"
                delay = self.tracker.exited(clock.monotonic())
                if delay is None:
                    log.error("gave up: service %s crashed %d times in a row; FATAL",
                              self.name, self.tracker.failures)
                    self._set_state(S.FATAL, "restart limit reached")
                    return
                log.warning("service %s crashed after %.2fs; retry %d/%d in %.2fs", self.name,
                            uptime, self.tracker.failures, self.manager.policy.max_retries, delay)
                self._set_state(S.BACKOFF, f"waiting {delay:.2f}s")
            if delay > 0:
                self._wake.wait(delay)
            with cond:
                if self._stop_requested:
                    self._set_state(S.STOPPED, "stopped during backoff")
                    return
                self._set_state(S.STARTING, "backoff elapsed")

    def _call_main(self) -> str:
        """Run main(); '' if it returned, else a one-line description of what it raised."""
        try:
            self.instance.main()
        except Exception as exc:
            log.exception("service %s raised in main()", self.name)
            return f"{type(exc).__name__}: {exc}"
        return ""

    def ready(self) -> None:
        with self.manager.cond:
            if self.state is S.STARTING and self._in_main:
                self._set_state(S.RUNNING, "ready() called")

    def stop(self, timeout: float) -> bool:
        """Ask the service to stop and wait up to ``timeout``; False if it did not return."""
        with self.manager.cond:
            thread = self.thread
            if self.state in (S.STOPPED, S.FATAL) or thread is None:
                return True
            self._stop_requested = True
            self._wake.set()
            call_disable = self._in_main
            if self.state in (S.STARTING, S.RUNNING):
                self._set_state(S.STOPPING, "disable() called" if call_disable else "stop asked")
            self.manager.cond.notify_all()
        if call_disable:
            try:
                self.instance.disable()
            except Exception:
                log.exception("service %s raised in disable()", self.name)
        thread.join(timeout)
        if thread.is_alive():
            log.error("service %s did not stop within %.1fs; leaving its thread %s behind",
                      self.name, timeout, thread.name)
            return False
        return True


class ServiceManager:
    """Owns every ServiceRunner; thread-safe; one per daemon."""

    def __init__(self, settings: Settings, cluster: Any = None, clock: Clock | None = None,
                 on_public_url: Callable[[str], None] | None = None,
                 builtins: Iterable[str] = ()) -> None:
        """``builtins``: services of the daemon itself (the cluster's), started first."""
        self.settings = settings
        self.cluster = cluster
        self.clock = clock or SystemClock()
        self.policy = BackoffPolicy(
            initial=settings.SERVICE_BACKOFF_INITIAL, factor=settings.SERVICE_BACKOFF_FACTOR,
            cap=settings.SERVICE_BACKOFF_MAX, max_retries=settings.SERVICE_MAX_RETRIES,
            min_uptime=settings.SERVICE_MIN_UPTIME, jitter=0.1)
        self.cond = threading.Condition()
        self._on_public_url = on_public_url or (lambda url: None)
        runners = [ServiceRunner(self, path, resolve_class(path))
                   for path in [*builtins, *settings.SERVICE_LIST]]
        aliases = {r.path: r.name for r in runners}
        for r in runners:
            r.requires = tuple(aliases.get(dep, dep) for dep in r.requires)
        order = dependency_order({r.name: r.requires for r in runners})
        by_name = {r.name: r for r in runners}
        self.runners: list[ServiceRunner] = [by_name[n] for n in order]
        self._by_key = {**by_name, **{r.path: r for r in runners}}
        self.stragglers: list[str] = []
        self._wait_cancelled = False

    def _requirements_up(self, runner: ServiceRunner) -> bool:
        return all(self._by_key[dep].state is S.RUNNING for dep in runner.requires)

    def runner(self, name: str) -> ServiceRunner:
        try:
            return self._by_key[name]
        except KeyError:
            raise ServiceUnavailable(f"no service named {name!r}") from None

    def get(self, name: str) -> Any:
        """The instance of a RUNNING service. Any thread, non-blocking."""
        runner = self.runner(name)
        if runner.state is not S.RUNNING:
            raise ServiceUnavailable(f"service {runner.name} is {runner.state}")
        return runner.instance

    def start(self) -> None:
        """Instantiate every service and start its runner (dependency order)."""
        global _active_manager
        _active_manager = self
        for runner in self.runners:
            self._instantiate(runner)
        with self.cond:
            for runner in self.runners:
                if runner.instance is not None:
                    runner.start()

    def _instantiate(self, runner: ServiceRunner) -> None:
        try:
            runner.instance = runner.cls()
            bind = getattr(runner.instance, "bind_context", None)
            if callable(bind):
                bind(ServiceContext(self.settings, self.get, runner.ready, self.cluster,
                                    self._on_public_url, self.http_routes, self.status,
                                    self.hooks))
        except Exception as exc:
            log.exception("service %s could not be created", runner.name)
            runner.last_error = f"{type(exc).__name__}: {exc}"
            with self.cond:
                runner.state = S.FATAL
                self.cond.notify_all()

    def http_routes(self) -> list[tuple[str, type]]:
        routes = []
        for runner in self.runners:
            hook = getattr(runner.instance, "http_routes", None)
            if callable(hook):
                routes += hook()
        return routes

    def wait_started(self, timeout: float) -> list[str]:
        """Block until every service has been RUNNING once or is FATAL; return those not up.

        Raises:
            HaltServer: a critical service is FATAL.
        """
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self._wait_cancelled:
                pending = [r for r in self.runners if not r.ever_running and r.state is not S.FATAL]
                fatal = [r for r in self.runners if r.critical and r.state is S.FATAL]
                if fatal:
                    raise HaltServer(f"critical service {fatal[0].name} failed: "
                                     f"{fatal[0].last_error}")
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    return [r.name for r in pending]
                self.cond.wait(remaining)
            return []

    def cancel_wait(self) -> None:
        """Make ``wait_started`` return now (a stop arrived during boot). Any thread."""
        with self.cond:
            self._wait_cancelled = True
            self.cond.notify_all()

    def restart_service(self, name: str) -> dict:
        """Stop a service (if up) and start it afresh with its failure count reset."""
        runner = self.runner(name)
        if not runner.stop(self._stop_timeout(runner)):
            raise TimeoutError(f"service {runner.name} did not stop; not restarted")
        with self.cond:
            runner.tracker.reset()
            runner.start()
        return runner.status()

    def _stop_timeout(self, runner: ServiceRunner) -> float:
        return float(getattr(runner.cls, "stop_timeout", self.settings.SERVICE_STOP_TIMEOUT))

    def stop(self) -> list[str]:
        """Stop every service in reverse dependency order; return the names that hung."""
        global _active_manager
        for runner in reversed(self.runners):
            if not runner.stop(self._stop_timeout(runner)):
                self.stragglers.append(runner.name)
        if _active_manager is self:
            _active_manager = None
        return self.stragglers

    def status(self) -> list[dict]:
        with self.cond:
            return [r.status() for r in self.runners]

    def hooks(self, name: str) -> list[Callable]:
        with self.cond:
            running = [r.instance for r in self.runners if r.state is S.RUNNING]
        return [hook for hook in (getattr(i, name, None) for i in running) if callable(hook)]

    def status_info(self) -> dict:
        """What RUNNING services add to the daemon's status (``status_info()``)."""
        info: dict = {}
        with self.cond:
            running = [r for r in self.runners if r.state is S.RUNNING]
        for runner in running:
            hook = getattr(runner.instance, "status_info", None)
            if callable(hook):
                try:
                    info.update(hook())
                except Exception as exc:  # a status must still answer
                    log.warning("service %s: status_info failed: %s", runner.name, exc)
        return info

    def reload(self, settings: Settings) -> tuple[dict[str, str], set[str]]:
        """Hand new settings to every RUNNING service that has ``reload(settings)``.

        Returns each one's outcome ("reloaded" or the error) and the setting names those
        services apply at once (their ``reloadable``); other changes wait for a restart.
        """
        self.settings = settings
        outcome = {}
        taken: set[str] = set()
        for runner in self.runners:
            instance = runner.instance
            ctx = getattr(instance, "ctx", None)
            if isinstance(ctx, ServiceContext):
                ctx.settings = settings
            reload = getattr(instance, "reload", None)
            if runner.state is not S.RUNNING or not callable(reload):
                continue
            try:
                reload(settings)
                outcome[runner.name] = "reloaded"
                taken.update(getattr(instance, "reloadable", ()))
            except Exception as exc:
                log.exception("service %s failed to reload its settings", runner.name)
                outcome[runner.name] = f"failed: {type(exc).__name__}: {exc}"
        return outcome, taken

    def states(self, names: Iterable[str] | None = None) -> dict[str, str]:
        with self.cond:
            return {r.name: str(r.state) for r in self.runners if names is None or r.name in names}
