"""Every setting's default value (as Django's global_settings).

A settings file sets only what it changes; every other name comes from here.
A settings file may import from this module to extend a list, e.g.
``SERVICE_LIST = defaults.SERVICE_LIST + ["my.module/MyService"]``.
Paths left as ``None`` are derived from DATA_DIR when settings are loaded.
"""

import socket

# Where jobs, logs, the lock, the control socket and the SQLite database live.
DATA_DIR = "./var"

# Bootstrap.
LOCK_FILE = None  # DATA_DIR/zephserver.pid
LOG_LEVEL = "INFO"
LOG_PATH = None  # DATA_DIR/zephserver.log

# External control: the UNIX socket the daemon listens on, and the one the CLI talks to.
CONFIGURATION_NETWORK_INTERFACE_SERVER = None  # DATA_DIR/zephserver.sock
CONFIGURATION_NETWORK_INTERFACE = None  # same as CONFIGURATION_NETWORK_INTERFACE_SERVER

# HTTP + WebSocket.
BIND_ADDRESS = "127.0.0.1"
PORT_ZEPH = 5558

# Services, started in dependency order ("dotted.module/ClassName").
SERVICE_LIST: list[str] = []

# JSON-RPC method name -> task class ("dotted.module/ClassName").
TASKS_PATH: dict[str, str] = {}

# Service supervision.
SERVICE_BACKOFF_INITIAL = 0.5  # seconds before the first restart of a crashed service
SERVICE_BACKOFF_FACTOR = 2.0
SERVICE_BACKOFF_MAX = 30.0
SERVICE_MAX_RETRIES = 5  # consecutive failed runs before FATAL
SERVICE_MIN_UPTIME = 5.0  # a run this long resets the failure count
SERVICE_STOP_TIMEOUT = 5.0  # seconds a service may take to return from main() after disable()
SERVICE_START_TIMEOUT = 30.0  # how long start waits for every service before reporting ready

# Cluster (fewer than two entries = no cluster).
CLUSTER_SERVER_LIST: list[dict] = []
NODE_NAME = socket.gethostname()

# Django.
DJANGO_SETTINGS_MODULE = "settings.django_settings"

# Applications that may be launched, and an optional wslink launcher file.
APPS: dict[str, dict] = {}
LAUNCHER_CONFIG = None
