"""Models of the zephserver app."""

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import models

# The job rows written by the transaction in progress on this thread, while one is being
# recorded (``recording_writes``): what to write again if that transaction fails.
_journal = threading.local()


@contextlib.contextmanager
def recording_writes() -> Iterator[list[tuple["Job", tuple[str, ...] | None]]]:
    """Within: every ``Job.save`` (None: an insert) and ``persist(*names)`` on this
    thread is noted, in order, in the list this yields."""
    writes: list[tuple[Job, tuple[str, ...] | None]] = []
    _journal.writes = writes
    try:
        yield writes
    finally:
        _journal.writes = None


def _note(job: "Job", names: tuple[str, ...] | None) -> None:
    writes = getattr(_journal, "writes", None)
    if writes is not None:
        writes.append((job, names))


class ApiToken(models.Model):
    """A bearer token for scripts; the token itself is never stored, only its digest."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    revoked = models.DateTimeField(null=True, blank=True)
    # the token it was made with (a script minting tokens): revoked with it
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="children")

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        state = "revoked" if self.revoked else "active"
        return f"{self.prefix}… ({self.user}, {state})"

    @classmethod
    def issue(cls, user: object, name: str = "", parent: "ApiToken | None" = None
              ) -> tuple["ApiToken", str]:
        """Create a token for ``user`` (made with token ``parent``, if any); returns the
        record and the token (shown once)."""
        from zephserver.web.tokens import new_token

        token, prefix, digest = new_token()
        return cls.objects.create(user=user, name=name, prefix=prefix, digest=digest,
                                  parent=parent), token

    @classmethod
    def revoke(cls, tokens: Any) -> int:
        """Revoke ``tokens`` (a queryset of active ones) and every token made with them,
        and with those, and so on; how many were revoked."""
        from django.utils import timezone

        now, count = timezone.now(), 0
        ids = list(tokens.values_list("id", flat=True))
        while ids:
            count += cls.objects.filter(id__in=ids, revoked__isnull=True).update(revoked=now)
            ids = list(cls.objects.filter(parent_id__in=ids, revoked__isnull=True)
                       .values_list("id", flat=True))
        return count


INSERT_SAVEPOINT = "zeph_insert_new"


def _insert_sizes(count: int) -> list[int]:
    """``count`` rows as INSERTs of a few fixed sizes (powers of two, up to 32): each
    connection caches a compiled statement per size; one per count would fill its cache
    with large programs used once, and fragment the heap as they come and go."""
    sizes = []
    for size in (32, 16, 8, 4, 2, 1):
        while count >= size:
            sizes.append(size)
            count -= size
    return sizes


class Job(models.Model):
    """One record for all launched work: batch jobs, sessions and supervised processes.

    Written before the process starts and after every state change, so that after a
    crash at any point the record tells the truth (see zephserver.service.job_manager).
    """

    app = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, default="batch")
    name = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="jobs")
    node = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, db_index=True)
    state_reason = models.TextField(blank=True)
    params = models.JSONField(default=dict)
    resources = models.JSONField(default=dict)
    priority = models.IntegerField(default=0)
    seq = models.FloatField(default=0.0)  # order within a priority (FIFO unless moved)
    progress = models.JSONField(default=dict)
    argv = models.JSONField(default=list)
    cwd = models.TextField(blank=True)
    job_dir = models.TextField(blank=True)
    log_path = models.TextField(blank=True)
    pid = models.IntegerField(null=True, blank=True)
    start_time = models.BigIntegerField(null=True, blank=True)  # kernel start time of pid
    boot_id = models.CharField(max_length=64, blank=True)  # the boot the pid belongs to
    exit_code = models.IntegerField(null=True, blank=True)
    stop_requested = models.CharField(max_length=16, blank=True)  # state to end in
    wall_time = models.FloatField(null=True, blank=True)
    restarts = models.IntegerField(default=0)
    extra = models.JSONField(default=dict, blank=True)  # kind-specific (ports, urls, ...)
    created = models.DateTimeField()
    queued_at = models.DateTimeField(null=True, blank=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["owner", "state"]), models.Index(fields=["node", "state"])]

    def __str__(self) -> str:
        return f"job {self.pk} {self.app} ({self.state})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if getattr(_journal, "writes", None) is not None:
            _note(self, None if self._state.adding else tuple(
                f.attname for f in self._meta.concrete_fields if not f.primary_key))
        super().save(*args, **kwargs)

    @classmethod
    def insert_new(cls, jobs: list["Job"]) -> None:
        """INSERT the records of ``jobs`` not yet written, a few statements for all (a
        burst of submits: a fifth of one ``save()`` each); each then has its id. If the
        database refuses, nothing is written and each job's own ``insert()`` later says
        why. (Under a savepoint of one fixed name: Django names each of its own anew,
        and every new name is one more statement compiled and cached by the connection.)"""
        from django.db import DatabaseError, connections, router, transaction

        from zephserver.web import rows

        new = [job for job in jobs if job.pk is None]
        if len(new) < 2:
            return
        alias = router.db_for_write(cls)
        connection = connections[alias]
        connection._savepoint(INSERT_SAVEPOINT)
        try:
            at = 0
            for size in _insert_sizes(len(new)):
                rows.insert(new[at:at + size], connection)
                at += size
        except DatabaseError:
            transaction.set_rollback(False, using=alias)  # (the savepoint undoes it)
            connection._savepoint_rollback(INSERT_SAVEPOINT)
            for job in new:
                job.pk, job._state.adding = None, True
            return
        connection._savepoint_commit(INSERT_SAVEPOINT)
        for job in new:
            _note(job, None)

    def insert(self) -> None:
        """INSERT this new record (the job manager's: 45 us, where ``save()`` takes 140); it
        then has its id."""
        from django.db import connections, router

        from zephserver.web import rows

        rows.insert([self], connections[router.db_for_write(type(self))])
        _note(self, None)

    def persist(self, *names: str) -> int:
        """UPDATE just these columns of this row: the job manager's hot path (a plain SQL
        UPDATE, ``web.rows``: 12 us, where ``save()`` takes 210). Returns how many rows
        changed (0: the row is gone)."""
        from django.db import connections, router

        from zephserver.web import rows

        _note(self, names)
        return rows.update(self, names, connections[router.db_for_write(type(self))])

    def to_json(self) -> dict:
        """The job as clients see it (JSON-RPC results and ``job.updated``)."""
        def when(value: Any) -> str | None:
            return None if value is None else value.isoformat()

        return {"id": self.pk, "app": self.app, "kind": self.kind, "name": self.name,
                "owner": self.owner.username, "node": self.node, "state": self.state,
                "state_reason": self.state_reason, "params": self.params,
                "resources": self.resources, "priority": self.priority,
                "progress": self.progress, "pid": self.pid, "exit_code": self.exit_code,
                "restarts": self.restarts, "created": when(self.created),
                "started": when(self.started), "finished": when(self.finished),
                **({"extra": public_extra(self.extra)} if self.extra else {})}


# Kind-specific values only the owner's own views show (a session's secret, the
# environment given to an agent process).
PRIVATE_EXTRA = frozenset({"secret", "password_hash", "env"})


def public_extra(extra: dict) -> dict:
    return {k: v for k, v in extra.items() if k not in PRIVATE_EXTRA}


class NodeLease(models.Model):
    """A cluster node's lease: renewed by the node with the database's clock; a node
    whose lease is older than NODE_LOST_AFTER is declared lost by one of the others
    (``lost_at``, set by a conditional UPDATE: zephserver.jobs.node_leases)."""

    node = models.CharField(max_length=255, primary_key=True)
    renewed = models.DateTimeField()
    lost_at = models.DateTimeField(null=True, blank=True)
    # its RESOURCES capacity as of its last renewal: whether a job fits any node
    capacity = models.JSONField(default=dict, blank=True)


class Installation(models.Model):
    """One row: the identity of this database. Nodes sharing it are one cluster; their
    cluster keys are derived from it too, so a node of another database is refused."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    cluster_id = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)


def installation_id() -> str:
    """This database's cluster id (made on first use)."""
    import secrets

    row, _ = Installation.objects.get_or_create(
        id=1, defaults={"cluster_id": secrets.token_hex(16)})
    return row.cluster_id
