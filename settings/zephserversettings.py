"""Default zephserver settings used by `make run`.

Set only what you change; everything else comes from zephserver.defaults.
"""

DATA_DIR = "./var"
LOG_LEVEL = "INFO"
PORT_ZEPH = 5558
