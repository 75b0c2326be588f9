import itertools

import pytest

from zephserver.errors import IllegalTransition
from zephserver.states import SERVICE_TRANSITIONS, ServiceState, check_service_transition

ALLOWED = [(a, b) for a, nexts in SERVICE_TRANSITIONS.items() for b in nexts]
FORBIDDEN = [(a, b) for a, b in itertools.product(ServiceState, ServiceState)
             if b not in SERVICE_TRANSITIONS[a]]


def test_every_state_has_a_row():
    """The transition table covers every state."""
    assert set(SERVICE_TRANSITIONS) == set(ServiceState)


@pytest.mark.parametrize(("old", "new"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_allowed_edge(old, new):
    """Each allowed edge is accepted."""
    check_service_transition(old, new)


@pytest.mark.parametrize(("old", "new"), FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_forbidden_edge(old, new):
    """Each edge not in the table raises IllegalTransition."""
    with pytest.raises(IllegalTransition):
        check_service_transition(old, new)


def test_expected_edges_present():
    """The edges the service manager relies on are in the table."""
    s = ServiceState
    for edge in [(s.STOPPED, s.STARTING), (s.STARTING, s.RUNNING), (s.RUNNING, s.BACKOFF),
                 (s.BACKOFF, s.STARTING), (s.RUNNING, s.FATAL), (s.RUNNING, s.STOPPING),
                 (s.STOPPING, s.STOPPED), (s.FATAL, s.STARTING), (s.BACKOFF, s.STOPPED)]:
        assert edge in ALLOWED
    assert (s.FATAL, s.RUNNING) in FORBIDDEN
    assert (s.STOPPED, s.RUNNING) in FORBIDDEN
