"""An example broker app module (seeds/002): it writes a configuration file for its
session and takes every other function from the defaults.

Name it in an app with ``"module": "zephserver.examples.conduit_module"``.
"""

import json
import os

from zephserver.launch.broker_helpers import gen_cert, get_launch_cmd, get_password

__all__ = ["gen_cert", "gen_config", "get_launch_cmd", "get_password"]


def gen_config(job: dict) -> str:
    """``<job_id>.config`` in the session's directory: where to listen and the TLS files."""
    path = os.path.join(job["job_root"], f"{job['job_id']}.config")
    cert_dir = job["job_root"]
    config = {"host": job["host"], "port": job["port"], "protocol": job["protocol"],
              "cert": os.path.join(cert_dir, f"{job['job_id']}.crt"),
              "key": os.path.join(cert_dir, f"{job['job_id']}.key")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    return path
