"""Cluster keys and the no-cluster case, without sockets."""

import pytest

from zephserver.infra.cluster import ClusterManager, derive_keys


def test_keys_are_derived_per_node_and_secret():
    import zmq

    public, secret = derive_keys("a secret of sixteen+", "n1")
    assert zmq.curve_public(secret) == public
    assert derive_keys("a secret of sixteen+", "n1") == (public, secret)
    assert derive_keys("a secret of sixteen+", "n2")[0] != public
    assert derive_keys("another secret here!", "n1")[0] != public
    # the same secret on another database (another cluster id): other keys
    assert derive_keys("a secret of sixteen+", "n1", "db-a")[0] != public
    assert derive_keys("a secret of sixteen+", "n1", "db-a")[0] != \
        derive_keys("a secret of sixteen+", "n1", "db-b")[0]


class Solo:
    NODE_NAME = "solo"
    CLUSTER_SERVER_LIST = [{"hostname": "solo", "address": "127.0.0.1", "port": 1}]


def test_fewer_than_two_nodes_is_no_cluster_and_every_call_succeeds():
    cm = ClusterManager(Solo())
    cm.start()
    cm.open()
    cm.say("event", {"anything": [1, 2]})
    cm.subscribe("event", print)
    cm.unsubscribe("event", print)
    assert cm.status() == {"enabled": False, "node": "solo", "peers": [], "delivered": 0,
                           "refused": 0}
    cm.stop()


def test_say_refuses_what_json_cannot_carry_at_once():
    cm = ClusterManager(Solo())
    cm.enabled = True
    cm._threads = [object()]  # as if started: say serialises before handing over
    with pytest.raises(TypeError):
        cm.say("event", {1, 2})
