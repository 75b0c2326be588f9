"""``LentConnections``: the task threads' database connections, lent one task at a time
(on a real SQLite database, in a child process: Django is configured once per process)."""

import pytest

from tests.support.django_child import run_with_django

pytestmark = pytest.mark.timeout(60)

SCRIPT = """
import threading
from django.contrib.auth.models import User
from django.db import connections
from zephserver.lent_connections import LentConnections

lender = LentConnections()

def query(tag):
    with lender.lent():
        User.objects.create(username=tag)
        return id(connections["default"].connection)

# one thread after another, each a new thread: one connection, lent to each in turn
used = []
for i in range(20):
    t = threading.Thread(target=lambda i=i: used.append(query(f"seq{i}")))
    t.start(); t.join()
print("in turn", lender.made, len(set(used)))

# three at once (each holds its connection until all three have one): three made, and
# past ``keep`` (2) idle ones, the third given back is closed
barrier = threading.Barrier(3)
def held(i):
    with lender.lent():
        User.objects.filter(username="seq0").exists()
        barrier.wait(10)
threads = [threading.Thread(target=held, args=(i,)) for i in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print("at once", lender.made, "kept", len(lender._free))

# outside lent(), a thread has none of them: its own, as Django makes it
def own():
    User.objects.count()
    print("own is lent", any(connections["default"] is w for w in lender._free))
t = threading.Thread(target=own); t.start(); t.join()

lender.close()
print("closed", all(w.connection is None for w in lender._free))
"""


def test_connections_are_lent_in_turn_and_as_many_as_used_at_once(tmp_path):
    assert run_with_django(tmp_path, SCRIPT) == [
        "in turn 1 1", "at once 3 kept 2", "own is lent False", "closed True"]
