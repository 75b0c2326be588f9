"""Bootstrap: lock, (daemonize), logging, control socket, cluster, services; then wait.

Order (everything that can fail comes first): settings are checked by the caller, then
the pid lock is taken, then the process detaches if asked, then the control socket is
bound and the cluster and services start. The main thread only waits on a command queue
that signal handlers and the control socket feed; the graceful stop runs on its own
thread so that a second SIGINT can still force an exit.
"""

import contextlib
import gc
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from zephserver import __version__, memory
from zephserver.config import Settings, check_settings, load_settings
from zephserver.errors import (
    AlreadyRunning,
    ExitCode,
    HaltServer,
    LockError,
    RpcCode,
    RpcError,
    SettingsError,
)
from zephserver.infra import control_commands
from zephserver.infra.cluster import CLUSTER_SERVICE, ClusterManager
from zephserver.infra.control import ControlServer, SocketInUse
from zephserver.infra.service_manager import ServiceManager
from zephserver.lock import PidLock
from zephserver.logs import apply_levels, configure_logging

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings,
                 prepare: Callable[[Settings], None] | None = None) -> None:
        """``prepare(settings)`` runs once before any service starts: what the services
        share is configured there (the commands pass Django's setup and the database
        checks); it may return ``{"cluster_identity": ...}``, which the cluster's keys
        are derived from besides CLUSTER_SECRET."""
        self.settings = settings
        self._prepare = prepare
        self.pid = os.getpid()
        self.started_at = time.time()
        self.stopping = False
        self.commands: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.lock = PidLock(settings.LOCK_FILE)
        # DATA_DIR is one daemon's too (its jobs, its database file): a second daemon with
        # another LOCK_FILE must not act on the first one's jobs.
        data_lock = os.path.join(settings.DATA_DIR, "zephserver.pid")
        self.data_lock = PidLock(data_lock) if os.path.abspath(settings.LOCK_FILE) != \
            os.path.abspath(data_lock) else None
        self.cluster = ClusterManager(settings)
        self.public_url = f"http://{settings.BIND_ADDRESS}:{settings.PORT_ZEPH}"
        self.manager: ServiceManager = None  # type: ignore[assignment]  # set in _boot
        self.control = ControlServer(settings.CONFIGURATION_NETWORK_INTERFACE_SERVER,
                                     lambda method, params: control_commands.dispatch(
                                         self, method, params))
        self._sigint_count = 0
        self._notify_fd: int | None = None
        self._reload_lock = threading.Lock()
        self.booted = threading.Event()
        # A stop during boot cancels it: the boot thread checks this between steps and
        # the service manager stops waiting for services that will never be needed.
        self._boot_lock = threading.Lock()
        self._boot_cancelled = False

    # -- what the control verbs call ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        status = {"pid": self.pid, "version": __version__, "node": self.settings.NODE_NAME,
                  "started": self.started_at, "uptime": time.time() - self.started_at,
                  "url": self.public_url, "stopping": self.stopping,
                  "booting": not self.booted.is_set(),
                  "services": self.manager.status() if self.manager else [],
                  "cluster": self.cluster.status(),
                  **(self.manager.status_info() if self.manager else {})}
        status["problems"] = degraded_by(status)
        status["degraded"] = bool(status["problems"])
        return status

    def reload(self) -> dict[str, Any]:
        """Re-read the settings file; if it is sound, hand it to the running services.

        Raises:
            RpcError: the file has problems (each listed; nothing was changed).
        """
        with self._reload_lock:
            try:
                new = load_settings(self.settings.path)
            except SettingsError as exc:
                raise RpcError(RpcCode.INVALID_PARAMS, f"settings not reloaded: {exc}") from None
            errors = [str(p) for p in check_settings(new) if p.is_error]
            if errors:
                raise RpcError(RpcCode.INVALID_PARAMS, "settings not reloaded: "
                               + "; ".join(errors), {"problems": errors})
            changed = {name for name in new if new[name] != self.settings.get(name)}
            self.settings = new
            apply_levels(new.LOG_LEVEL)
            services, taken = self.manager.reload(new)
            restart = sorted(changed - taken - {"LOG_LEVEL"})
        log.info("settings reloaded from %s: %s%s", new.path, services or "no service reloads",
                 f"; a restart is needed for {', '.join(restart)}" if restart else "")
        return {"services": services, "restart_needed_for": restart}

    def request_stop(self, why: str) -> None:
        """Ask for a graceful stop. Any thread or a signal handler; only enqueues."""
        self.commands.put(("stop", why))

    # -- running ------------------------------------------------------------------------

    def run(self, daemonize: bool = False, out: Any = None) -> int:
        """Run until stopped; return the exit code. ``out`` gets the one-line messages."""
        out = out or sys.stdout
        memory.one_arena()
        try:
            self.lock.acquire()
        except AlreadyRunning as exc:
            print(f"zephserver: already running (pid {exc.pid})", file=out, flush=True)
            return ExitCode.OK
        except LockError as exc:
            print(f"zephserver: error: {exc} (check LOCK_FILE and its directory's permissions)",
                  file=sys.stderr, flush=True)
            return ExitCode.NO_PERMISSION
        if self.data_lock is not None:
            try:
                self.data_lock.acquire()
            except (AlreadyRunning, LockError) as exc:
                self.lock.release()
                other = f" (pid {exc.pid})" if isinstance(exc, AlreadyRunning) else ""
                print(f"zephserver: error: DATA_DIR {self.settings.DATA_DIR} is used by "
                      f"another daemon{other}; each daemon needs its own DATA_DIR",
                      file=sys.stderr, flush=True)
                return ExitCode.FAILED
        if daemonize:
            parent_code, self._notify_fd = _daemonize(out)
            if parent_code is not None:
                return parent_code
            self.pid = os.getpid()
            self.lock.adopt_current_pid()
            if self.data_lock is not None:
                self.data_lock.adopt_current_pid()
        code = ExitCode.FAILED
        try:
            s = self.settings
            configure_logging(s.LOG_PATH, s.LOG_LEVEL, s.LOG_FORMAT, s.NODE_NAME,
                              to_stderr=not daemonize)
            code = self._serve(out)
        finally:
            self._notify_parent(f"fail {int(code)} see {self.settings.LOG_PATH}")
            if self.data_lock is not None:
                self.data_lock.release()
            self.lock.release()
            log.info("zephserver stopped (exit %d)", code)
            logging.shutdown()
        if self.manager is not None and self.manager.stragglers:
            os._exit(code)  # hung service threads must not keep the process alive
        return code

    def _notify_parent(self, message: str) -> None:
        """Tell the waiting ``start --daemon`` parent how boot went (once)."""
        if self._notify_fd is not None:
            _notify(self._notify_fd, message)
            self._notify_fd = None

    def _serve(self, out: Any) -> int:
        log.info("zephserver %s starting (pid %d, node %s, settings %s)", __version__,
                 self.pid, self.settings.NODE_NAME, self.settings.path)
        try:
            self.control.bind()
        except SocketInUse as exc:
            log.error("%s; is another daemon using the same control socket?", exc.strerror)
            return ExitCode.FAILED
        except OSError as exc:
            log.error("cannot bind the control socket %s: %s", self.control.path, exc)
            return ExitCode.NO_PERMISSION if isinstance(exc, PermissionError) else ExitCode.FAILED
        self._install_signal_handlers()
        try:
            # The control socket answers from the start (status says "booting"), and the
            # boot runs on its own thread: the main thread keeps reading commands, so a
            # stop during a slow boot is acted on at once.
            self.control.start()
            boot = threading.Thread(target=self._boot, name="zeph-boot", daemon=True)
            boot.start()
            while True:
                what, detail = self.commands.get()
                if what == "booted":
                    break
                if what == "halt":
                    raise detail  # a HaltServer from the boot thread
                if what == "force":
                    self._force_exit(detail)
                if what == "stop":
                    log.info("stopping during boot: %s", detail)
                    self._cancel_boot()
                    boot.join(self.settings.SERVICE_START_TIMEOUT)
                    self._shutdown()
                    return ExitCode.OK
                log.info("%s ignored during boot", what)
            problems = degraded_by({"services": self.manager.status()})
            line = f"zephserver ready on {self.public_url}" + (
                f" (degraded: {', '.join(problems)})" if problems else "")
            (log.warning if problems else log.info)(line)
            # one write: with PYTHONUNBUFFERED, print() writes the text and its newline
            # apart, and a service logging at that moment lands inside the line that
            # scripts read the URL from
            out.write(line + "\n")
            out.flush()
            self._notify_parent(f"ready {line.split(' on ', 1)[1]}")
            code = self._wait_for_stop()
        except HaltServer as exc:
            log.error("halting: %s", exc.reason)
            self._cancel_boot()
            self._shutdown()
            code = exc.exit_code
        finally:
            self._restore_signal_handlers()
        return code

    def _boot(self) -> None:
        """Boot thread: prepare, cluster, services; then ("booted", ...) or ("halt", ...)."""
        try:
            prepared = (self._prepare(self.settings) if self._prepare is not None
                        else None) or {}
            with self._boot_lock:
                if self._boot_cancelled:
                    return
                try:
                    self.cluster.start(prepared.get("cluster_identity", ""))
                except OSError as exc:
                    raise HaltServer(str(exc), ExitCode.FAILED) from None
                builtins = [CLUSTER_SERVICE] if self.cluster.enabled else []
                self.manager = ServiceManager(self.settings, self.cluster,
                                              on_public_url=self._set_public_url,
                                              builtins=builtins)
                self.manager.start()
            not_up = self.manager.wait_started(self.settings.SERVICE_START_TIMEOUT)
            if self._boot_cancelled:
                return
            if not_up:
                log.warning("services not yet running after %.0fs: %s",
                            self.settings.SERVICE_START_TIMEOUT, ", ".join(not_up))
            self.cluster.open()  # services have subscribed: deliver what came meanwhile
            # What the start built (Django, tornado, apps, settings: several hundred
            # thousand objects) lives as long as the daemon. Frozen, a full collection
            # no longer walks it: that walk took about 40 ms with the GIL held, the p99
            # of a busy server's replies.
            gc.collect()
            gc.freeze()
            memory.settle()  # packed by pymalloc; what comes next from glibc's heap
            memory.give_back_now()  # what the start built and dropped (the migration check)
            self.booted.set()
            self.commands.put(("booted", ""))
        except HaltServer as exc:
            self.commands.put(("halt", exc))
        except Exception as exc:  # a bug in a prepare step: halt with it, not hang
            log.exception("boot failed")
            self.commands.put(("halt", HaltServer(f"boot failed: {type(exc).__name__}: "
                                                  f"{exc}", ExitCode.FAILED)))

    def _cancel_boot(self) -> None:
        with self._boot_lock:
            self._boot_cancelled = True
            if self.manager is not None:
                self.manager.cancel_wait()

    def _set_public_url(self, url: str) -> None:
        self.public_url = url

    def _wait_for_stop(self) -> int:
        while (command := self.commands.get())[0] == "reload":
            try:
                self.reload()
            except RpcError as exc:
                log.error("%s", exc.message)
        log.info("stopping: %s", command[1])
        self.stopping = True
        threading.Thread(target=self._shutdown_then_report, name="zeph-shutdown").start()
        while True:
            what, why = self.commands.get()
            if what == "done":
                return ExitCode.OK
            if what == "force":
                self._force_exit(why)

    def _force_exit(self, why: str) -> None:
        log.warning("forced exit (%s): not waiting for services", why)
        self.control.close()
        self.lock.release()
        logging.shutdown()
        os._exit(ExitCode.FAILED)

    def _shutdown_then_report(self) -> None:
        try:
            self._shutdown()
        finally:
            self.commands.put(("done", ""))

    def _shutdown(self) -> None:
        """Stop in reverse order of start: services, cluster, control."""
        self.stopping = True
        if self.manager is not None:
            stragglers = self.manager.stop()
            if stragglers:
                log.error("services that did not stop: %s", ", ".join(stragglers))
        self.cluster.stop()
        self.control.close()

    # -- signals: handlers only enqueue ----------------------------------------------------

    def _install_signal_handlers(self) -> None:
        self._old_handlers = {sig: signal.signal(sig, self._on_signal)
                              for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def _restore_signal_handlers(self) -> None:
        for sig, handler in getattr(self, "_old_handlers", {}).items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self.commands.put(("reload", "SIGHUP"))
            return
        if signum == signal.SIGINT:
            self._sigint_count += 1
            if self._sigint_count > 1:
                self.commands.put(("force", "second SIGINT"))
                return
        self.commands.put(("stop", signal.Signals(signum).name))


def degraded_by(status: dict[str, Any]) -> list[str]:
    """What keeps a booted daemon from being whole: services not RUNNING, a database that
    does not answer. Empty while it boots or stops (those say so themselves)."""
    if status.get("stopping") or status.get("booting"):
        return []
    problems = [f"{s['name']} {s['state']}" for s in status.get("services", [])
                if s["state"] != "RUNNING"]
    database = status.get("database")
    if database and database.get("state") != "ok":
        problems.append(f"database {database['state']}")
    return problems


def _notify(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (message + "\n").encode())
        os.close(fd)


def _daemonize(out: Any) -> tuple[int | None, int | None]:
    """Detach (double fork, new session). In the parent: wait for the daemon to say it is
    ready and return (exit code, None). In the daemon: return (None, fd to report on)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        os.waitpid(pid, 0)  # the intermediate child exits at once
        with os.fdopen(read_fd, "rb") as pipe:
            line = pipe.readline().decode().strip()
        if line.startswith("ready "):
            print(f"zephserver ready on {line[6:]}", file=out, flush=True)
            return (ExitCode.DEGRADED if "(degraded: " in line else ExitCode.OK), None
        if line.startswith("fail "):
            parts = line.split(" ", 2)
            print(f"zephserver: error: the daemon failed to start ({parts[2]})",
                  file=sys.stderr, flush=True)
            return int(parts[1]) or ExitCode.FAILED, None
        print("zephserver: error: the daemon exited before it was ready", file=sys.stderr,
              flush=True)
        return ExitCode.FAILED, None
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return None, write_fd
