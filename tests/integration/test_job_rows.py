"""The job manager's plain-SQL writes (``web.rows``: ``Job.insert``, ``insert_new``,
``persist``) store exactly what the ORM's ``save()`` stores, value for value (and on
SQLite, byte for byte: a datetime is text there), on SQLite and on a real PostgreSQL."""

import pytest

from tests.support.django_child import run_with_django
from tests.support.postgres import Postgres

pytestmark = pytest.mark.timeout(120)

SCRIPT = """
import datetime
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.forms.models import model_to_dict
from django.utils import timezone
from zephserver.web.models import Job

owner = User.objects.create(username="ann")
when = timezone.now().replace(microsecond=123456)
def new():
    return Job(app="a", kind="session", name="n\\u00e9e", owner=owner, node="node-1",
               state="QUEUED", state_reason="it's 100% 'quoted'; DROP TABLE x; --",
               params={"n": 3, "nested": {"a": [1, 2.5, None, "x"]}},
               resources={"cores": 2, "memory": 512}, priority=-3, seq=12.75,
               progress={}, argv=["prog", "--flag", "sp ace"], cwd="/tmp", job_dir="",
               log_path="", pid=None, start_time=None, boot_id="", exit_code=None,
               stop_requested="", wall_time=1.5, restarts=0, extra={"port": 8080},
               created=when, queued_at=when, started=None, finished=None)

def row(job):
    fields = model_to_dict(Job.objects.get(pk=job.pk))
    fields.pop("id")
    # the stored values as text, before the ORM (or SQLite's type converters) read them
    columns = [f.column for f in Job._meta.concrete_fields if not f.primary_key]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(f'CAST({c} AS TEXT)' for c in columns)} "
                       f"FROM {Job._meta.db_table} WHERE id = %s", [job.pk])
        fields["raw"] = dict(zip(columns, cursor.fetchone()))
    return fields

with transaction.atomic():
    by_orm, by_rows = new(), new()
    by_orm.save()
    by_rows.insert()
    print("insert", row(by_rows) == row(by_orm), by_rows._state.adding, by_rows.pk > by_orm.pk)
    burst = [new() for _ in range(5)]
    Job.insert_new(burst)
    print("burst", all(row(j) == row(by_orm) for j in burst), len({j.pk for j in burst}))
    for job in (by_orm, by_rows):
        job.state, job.state_reason, job.pid, job.start_time = "RUNNING", "running", 4242, 2**40
        # UTC as the manager's, without microseconds (str() leaves them out then)
        job.started = (when + datetime.timedelta(seconds=1)).replace(microsecond=0)
        job.queued_at = when.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
        job.progress = {"percent": 50.0, "message": "half"}
        job.extra = {"port": 8080, "url": "http://x/?a=1&b=%s"}
        job.exit_code, job.wall_time = 0, None
    by_orm.save()
    changed = by_rows.persist("state", "state_reason", "pid", "start_time", "started",
                              "queued_at", "progress", "extra", "exit_code", "wall_time")
    print("persist", changed, row(by_rows) == row(by_orm))
    gone = new()
    gone.insert()
    Job.objects.filter(pk=gone.pk).delete()
    print("gone", gone.persist("state"))
"""

EXPECTED = ["insert True False True", "burst True 5", "persist 1 True", "gone 0"]


def test_plain_sql_rows_match_the_orms_on_sqlite(tmp_path):
    assert run_with_django(tmp_path, SCRIPT) == EXPECTED


def test_plain_sql_rows_match_the_orms_on_postgresql(tmp_path):
    with Postgres() as pg:
        assert run_with_django(tmp_path, SCRIPT, database_url=pg.database("rows")) == EXPECTED
