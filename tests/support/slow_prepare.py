"""A broker app module for the fencing test: on a node whose DATA_DIR holds a file
``slow``, preparing a session takes SLOW seconds (and says so with a file ``preparing``
in the session's directory), so the node sits in its planning transaction that long."""

import os
import time

from zephserver.launch.broker_helpers import gen_cert, get_launch_cmd, get_password

__all__ = ["gen_cert", "gen_config", "get_launch_cmd", "get_password"]

SLOW = 4.0


def gen_config(job: dict) -> None:
    root = job["job_root"]  # DATA_DIR/jobs/<id>/
    if os.path.exists(os.path.join(root, "..", "..", "slow")):
        with open(os.path.join(root, "preparing"), "w") as f:
            f.write("preparing\n")
        time.sleep(SLOW)
