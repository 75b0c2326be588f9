"""The job core's API for interactive sessions: the ParaViewWeb/wslink launcher REST
API and the ``sessions.*`` methods. Part of ``JobManagerService``, beside ``JobsApi``
(whose checks and lookups it uses)."""

from concurrent.futures import Future
from typing import Any

from zephserver.actor import on_actor
from zephserver.audit import audit_when_done
from zephserver.errors import RpcCode, RpcError
from zephserver.jobs.api import JobsApi, rpc_error
from zephserver.launch.apps import GENERATED
from zephserver.launch.interactive import SESSION_GENERATED
from zephserver.launch.states import TERMINAL, JobState
from zephserver.task.base import UserInfo

J = JobState
# Keys a session request may carry besides the app's params: echoed, never substituted.
ECHOED_KEYS = frozenset({"application", "sessionManagerURL", "queue"})


class InteractiveApi(JobsApi):

    def start_session(self, user: UserInfo, app_name: Any, body: dict,
                      may_queue: bool | None) -> Future:
        """Ask for a session. The future resolves once it is ready (its view), at once
        if it may queue and has to wait (state QUEUED), or fails with -32003 (no
        resources, or it died or was not ready in time) or -32602 (bad request)."""
        app = self.app_for(app_name, user, "application")
        if app.session is None:
            raise rpc_error(RpcCode.INVALID_PARAMS, f"app {app.name!r} is not a session app "
                            f"(kind {app.kind})", "application")
        params, client = {}, {}
        for key, value in body.items():
            if key in app.params:
                params[key] = value
            elif key not in ECHOED_KEYS:
                reserved = key in app.vars or key in GENERATED or key in SESSION_GENERATED
                raise rpc_error(RpcCode.INVALID_PARAMS, f"{key!r} is set by the server and "
                                "may not be given by a client" if reserved else
                                f"{key!r} is not a parameter of app {app.name!r}", key)
            client[key] = value
        cleaned, needs = self._checked(app, params, None)
        job = self._new_job(user, app, cleaned, needs, 0, extra={"client": client})
        queue = app.session.queue if may_queue is None else may_queue
        return audit_when_done(self.call(self._queue_session, job, queue), "launch", user,
                               lambda view: f"session {view.get('id')} (app {app.name})")

    def _queue_session(self, job: Any, may_queue: bool) -> Future:
        self._queue_new(job)
        return self.interactive.wait_for(job.pk, may_queue)

    def _session(self, user: UserInfo, session_id: Any, deleted_ok: bool = False) -> Any:
        """The session ``session_id`` ("12" or 12) for ``user``; -32005 if unknown or
        deleted (as the wslink launcher forgets a deleted session)."""
        if isinstance(session_id, str) and session_id.isdigit() and len(session_id) < 12:
            session_id = int(session_id)
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise rpc_error(RpcCode.NOT_FOUND, f"no session {session_id!r}", "id")
        try:
            job = self._job(user, session_id)
        except RpcError as exc:
            if exc.code == RpcCode.NOT_FOUND:
                raise rpc_error(RpcCode.NOT_FOUND, f"no session {session_id}", "id") \
                    from None
            raise
        if job.kind != "session":
            raise rpc_error(RpcCode.NOT_FOUND, f"no session {session_id}", "id")
        if not deleted_ok and (job.state == J.CANCELLED or job.stop_requested == J.CANCELLED):
            raise rpc_error(RpcCode.NOT_FOUND, f"session {session_id} was deleted", "id")
        return job

    def _session_view(self, user: UserInfo, job: Any) -> dict:
        position = self.waiting.position(job.pk) if job.state == J.QUEUED else None
        return self.interactive.view(job, owner=job.owner_id == user.id, position=position)

    @on_actor
    def session_get(self, user: UserInfo, session_id: Any, deleted_ok: bool = False) -> dict:
        return self._session_view(user, self._session(user, session_id, deleted_ok))

    def session_stop(self, user: UserInfo, session_id: Any) -> dict:
        """Stop a session (on its node); its view, as it is once the stop is asked."""
        job = self._session(user, session_id)
        self.cancel(user, job.pk)  # answered once committed: the record says it now
        view = self._session_view(user, self._session(user, session_id, deleted_ok=True))
        view.pop("secret", None)
        view["job"]["password_hash"] = None
        return view

    @on_actor
    def stop_abandoned(self, user: UserInfo, session_id: Any) -> None:
        """The client that asked for this session left before the answer."""
        job = self._session(user, session_id)
        active = self.active(job.pk)
        if active is not None and not job.stop_requested:
            self.stop(active, J.CANCELLED, "stopping: the client that asked for it "
                      "left before it was ready", user.username)

    def sessions_list(self, user: UserInfo, all_users: bool = False) -> list[dict]:
        from zephserver.web.models import Job

        if all_users and not user.is_staff:
            raise rpc_error(RpcCode.FORBIDDEN, "only staff may list every user's sessions",
                            "all")
        jobs = Job.objects.select_related("owner").filter(kind="session").exclude(
            state__in=list(TERMINAL)).order_by("id")
        if not all_users:
            jobs = jobs.filter(owner_id=user.id)
        return self._views(user, list(jobs))

    @on_actor
    def _views(self, user: UserInfo, jobs: list) -> list[dict]:
        out = []
        for j in jobs:
            active = self.active(j.pk)
            out.append(self._session_view(user, active.job if active is not None else j))
        return out
