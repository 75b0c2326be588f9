"""Default zephserver settings used by `make run`.

Set only what you change; everything else comes from zephserver.defaults.
"""

import os

DATA_DIR = "./var"
# Work never runs as root by accident: started as root, the demo apps and agent processes
# run as nobody (an app may name its own run_as; "$user" with USER_MAP runs each user's
# work as their own Unix account).
RUN_AS = "nobody" if os.geteuid() == 0 else None
LOG_LEVEL = "INFO"
PORT_ZEPH = 5558

# Two example applications (README "Applications" explains every key).
APPS = {
    # A short Python program that prints "step N of M": try it from the web UI or a script.
    "demo": {
        "description": "Prints a progress line per step.",
        "argv": ["$python", "-u", "-m", "zephserver.examples.demo_job",
                 "--steps", "$steps", "--delay", "$delay"],
        "params": {
            "steps": {"type": "int", "default": 20, "min": 1, "max": 10000},
            "delay": {"type": "float", "default": 0.5, "min": 0, "max": 60},
        },
        "resources": {"cores": 1},
        "grace": 5,
        "parser": {"progress": r"step (?P<value>\d+) of (?P<total>\d+)",
                   "status": r"^demo: (?P<status>.+)"},
    },
    # LS-DYNA: point LSDYNA_SOLVER at the solver; the input deck must lie under MODELS.
    # Until then the fake solver stands in so the progress parser and switches can be seen.
    "lsdyna": {
        "description": "LS-DYNA explicit run of an input deck (i=...).",
        "vars": {"solver_module": "zephserver.examples.fake_lsdyna"},
        "argv": ["$python", "-u", "-m", "$solver_module", "--ncpu", "$ncpu"],
        # With a real solver:
        # "vars": {"solver": "/opt/lsdyna/ls-dyna_smp_d_R13"},
        # "argv": ["$solver", "i=$deck", "ncpu=$ncpu", "memory=$memory"],
        "params": {
            "ncpu": {"type": "int", "default": 1, "min": 1, "max": 64},
        },
        "env": {"OMP_NUM_THREADS": "$ncpu"},
        "resources": {"cores": "$ncpu", "licenses": {"lsdyna": "$ncpu"}},
        "grace": 30,
        "parser": "lsdyna",
        "controls": {
            "sw1": {"file": "d3kil", "payload": "sw1\n",
                    "description": "write a restart dump and stop"},
            "sw2": {"file": "d3kil", "payload": "sw2\n", "description": "report status"},
            "sw3": {"file": "d3kil", "payload": "sw3\n",
                    "description": "write a restart dump and continue"},
            "sw4": {"file": "d3kil", "payload": "sw4\n",
                    "description": "write a d3plot state and continue"},
        },
    },
    # An interactive session: a WebSocket echo server. POST {"application": "echo"} to
    # /paraview (README "Sessions") and connect to the sessionURL it answers with.
    "echo": {
        "kind": "session",
        "description": "WebSocket echo server; send the secret first.",
        "argv": ["$python", "-u", "-m", "zephserver.examples.echo_session", "--port", "$port"],
        "env": {"ZEPH_SESSION_SECRET": "$secret"},
        "port_range": [9001, 9100],
        "ready_line": "Starting factory",
        "timeout": 20,
        "resources": {"cores": 0},
        "grace": 5,
    },
}
RESOURCES = {"cores": None, "memory": None, "licenses": {"lsdyna": 4}}
