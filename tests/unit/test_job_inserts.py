"""``Job.insert_new``, ``insert`` and ``persist`` (plain SQL, ``web.rows``): a burst of new
records in one INSERT, on a real SQLite database (in a child process: Django is configured
once per process)."""

import pytest

from tests.support.django_child import run_with_django

pytestmark = pytest.mark.timeout(60)

SCRIPT = """
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from zephserver.web.models import Job, recording_writes

owner = User.objects.create(username="ann")
def new(state):
    return Job(app="a", owner=owner, state=state, created=timezone.now())

with transaction.atomic(), recording_writes() as writes:
    jobs = [new("QUEUED") for _ in range(3)]
    Job.insert_new(jobs)
    print("ids", [j.pk for j in jobs] == sorted(j.pk for j in jobs), len({j.pk for j in jobs}))
    print("noted", [names for _, names in writes] == [None] * 3)
    print("written", Job.objects.filter(pk__in=[j.pk for j in jobs]).count())
with transaction.atomic(), recording_writes() as writes:
    refused = [new("QUEUED"), new(None), new("QUEUED")]  # state is NOT NULL
    Job.insert_new(refused)
    print("refused", [j.pk for j in refused], len(writes), Job.objects.count())
    refused[0].save()  # the transaction is still usable: the others go one by one
    print("then", refused[0].pk is not None, Job.objects.count())
seen = []
def record(sql):  # (what SQLite itself runs: the INSERTs bypass Django's cursor)
    seen.append(sql.split(" (")[0] if sql.startswith("INSERT") else sql)
with transaction.atomic():
    connection.connection.set_trace_callback(record)
    for count in (37, 37, 5):
        Job.insert_new([new("QUEUED") for _ in range(count)])
    connection.connection.set_trace_callback(None)
print("statements", sorted(set(seen)), seen.count('INSERT INTO "zephweb_job"'))
try:
    with transaction.atomic():
        refused[1].save()
except IntegrityError as exc:
    print("one says why:", "state" in str(exc))
"""


def test_a_burst_is_inserted_at_once_and_a_refusal_spoils_nothing(tmp_path):
    assert run_with_django(tmp_path, SCRIPT) == [
        "ids True 3", "noted True", "written 3",
        "refused [None, None, None] 0 3", "then True 4",
        # one savepoint name, INSERTs of a few sizes (37 = 32 + 4 + 1, 5 = 4 + 1): the
        # connection's cache of compiled statements holds a few, not one per count
        "statements ['INSERT INTO \"zephweb_job\"', 'RELEASE SAVEPOINT \"zeph_insert_new\"', "
        "'SAVEPOINT \"zeph_insert_new\"'] 8",
        "one says why: True"]
