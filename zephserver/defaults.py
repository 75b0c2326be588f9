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
LOG_LEVEL = "INFO"  # or {"": "INFO", "zephserver.service.router": "DEBUG"}
LOG_FORMAT = "text"  # or "json": one JSON object per line
LOG_PATH = None  # DATA_DIR/zephserver.log

# External control: the UNIX socket the daemon listens on, and the one the CLI talks to.
CONFIGURATION_NETWORK_INTERFACE_SERVER = None  # DATA_DIR/zephserver.sock
CONFIGURATION_NETWORK_INTERFACE = None  # same as CONFIGURATION_NETWORK_INTERFACE_SERVER

# HTTP + WebSocket.
BIND_ADDRESS = "127.0.0.1"
PORT_ZEPH = 5558

# Request bodies: larger ones get 413 before they are read (JSON APIs; Django's pages).
HTTP_MAX_JSON_BODY = 64 * 1024
HTTP_MAX_FORM_BODY = 1024 * 1024

# /healthz, /readyz and /metrics: on PORT_ZEPH (None) or on an address of their own
# ("127.0.0.1:9558"); open to all, or only to a staff user's API token.
OPS_ADDRESS = None
OPS_REQUIRE_TOKEN = False

# Services, started in dependency order ("dotted.module/ClassName").
SERVICE_LIST: list[str] = [
    "zephserver.service.session_manager/SessionManagerService",
    "zephserver.service.room_handler/RoomHandlerService",
    "zephserver.service.router/RouterService",
    "zephserver.service.queue_manager/QueueManagerService",
    "zephserver.service.job_manager/JobManagerService",
    "zephserver.service.agent/AgentService",
    "zephserver.service.websocket_client/WebSocketService",
    "zephserver.service.operations/OperationsService",
]

# JSON-RPC method name -> task class ("dotted.module/ClassName").
TASKS_PATH: dict[str, str] = {
    "ping": "zephserver.task.ping/PingTask",
    "whoami": "zephserver.task.ping/WhoAmITask",
    "room.join": "zephserver.task.rooms/RoomJoinTask",
    "room.leave": "zephserver.task.rooms/RoomLeaveTask",
    "room.say": "zephserver.task.rooms/RoomSayTask",
    "apps.list": "zephserver.task.jobs/AppsListTask",
    "jobs.submit": "zephserver.task.jobs/JobsSubmitTask",
    "jobs.list": "zephserver.task.jobs/JobsListTask",
    "jobs.get": "zephserver.task.jobs/JobsGetTask",
    "jobs.cancel": "zephserver.task.jobs/JobsCancelTask",
    "jobs.output": "zephserver.task.jobs/JobsOutputTask",
    "jobs.subscribe": "zephserver.task.jobs/JobsSubscribeTask",
    "jobs.unsubscribe": "zephserver.task.jobs/JobsUnsubscribeTask",
    "jobs.control": "zephserver.task.jobs/JobsControlTask",
    "jobs.update": "zephserver.task.jobs/JobsUpdateTask",
    "queue.list": "zephserver.task.jobs/QueueListTask",
    "queue.move": "zephserver.task.jobs/QueueMoveTask",
    "queue.hold": "zephserver.task.jobs/QueueHoldTask",
    "queue.release": "zephserver.task.jobs/QueueReleaseTask",
    "resources.status": "zephserver.task.jobs/ResourcesStatusTask",
    "sessions.start": "zephserver.task.sessions/SessionsStartTask",
    "sessions.list": "zephserver.task.sessions/SessionsListTask",
    "sessions.get": "zephserver.task.sessions/SessionsGetTask",
    "sessions.stop": "zephserver.task.sessions/SessionsStopTask",
    "tokens.list": "zephserver.task.tokens/TokensListTask",
    "tokens.create": "zephserver.task.tokens/TokensCreateTask",
    "tokens.revoke": "zephserver.task.tokens/TokensRevokeTask",
}

# WebSocket /ws.
WS_ALLOWED_ORIGINS: list[str] = []  # origins besides our own host, e.g. "https://app.example"
WS_MAX_MESSAGE_SIZE = 1024 * 1024  # bytes; a larger message closes the connection with 1009
WS_PING_INTERVAL = 20.0  # seconds between keepalive pings (0 = off)
WS_PING_TIMEOUT = 20.0  # close a connection whose pong is this late (<= the interval)
WS_MAX_BATCH = 100  # JSON-RPC requests in one batch
WS_MAX_IN_FLIGHT = 32  # requests one connection may have running or queued

# Router task pool.
TASK_POOL_SIZE = 8
TASK_QUEUE_SIZE = 256
TASK_POOL_USER_SHARE = 0.5  # of the threads (and of the queue) one user may hold
TASK_SHUTDOWN_TIMEOUT = 5.0  # seconds running tasks get after interrupt() at shutdown
TASK_REPLY_TIMEOUT = 30.0  # seconds a task's Future may take before the client gets -32012

# Session manager: how long a resolved session or token is trusted before a re-check.
SESSION_CACHE_TTL = 5.0

# Threads running Django views.
WSGI_POOL_SIZE = 4

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
CLUSTER_SECRET = None  # shared by the nodes; their CURVE keys are derived from it
CLUSTER_HEARTBEAT = 1.0  # seconds between heartbeats to each peer
CLUSTER_HEARTBEAT_TIMEOUT = 3.0  # a peer silent this long is down (cluster.node_down)
CLUSTER_RETRY = 0.5  # seconds before unacknowledged messages are sent again
CLUSTER_BUFFER_MESSAGES = 100000  # messages kept per peer until acknowledged
CLUSTER_BUFFER_AGE = 300.0  # seconds a message is kept for a peer that does not answer
CLUSTER_MAX_MESSAGE = 64 * 1024 * 1024  # bytes; a larger frame from a peer is refused
# A request forwarded to the node that runs a job (cancel, output...) not answered within
# this many seconds is -32007 "node N is unreachable" (a node known to be down: at once).
CLUSTER_CALL_TIMEOUT = 1.0

# The 2015 Zephserver client's wire format ({task, data, room, session_id} frames), on
# a path of its own, e.g. "/zephws"; None: off. /ws is JSON-RPC only.
LEGACY_WS_PATH = None

# The database (see zephserver/database.py): None is the embedded SQLite under DATA_DIR,
# for one node; a cluster shares one PostgreSQL, e.g.
# "postgresql://zeph:secret@db.example.org:5432/zeph" (migrated with zephserver-admin).
DATABASE_URL = None

# Django. SECRET_KEY signs login sessions: None is DATA_DIR/secret_key on one node, and
# in a cluster one derived from CLUSTER_SECRET (a login on one node is valid on all).
DJANGO_SETTINGS_MODULE = "settings.django_settings"
SECRET_KEY = None

# Applications that may be launched (see README "Applications"), and an optional wslink
# launcher file.
APPS: dict[str, dict] = {}
# Who work runs as when an app has no run_as: an account, "$user" (the owner's own, via
# USER_MAP), or "root" on purpose. None: the daemon's account, refused if that is root.
RUN_AS: str | None = None
# A cgroup per job and agent process where the kernel offers one (a stop takes every
# descendant; resources.memory is a hard limit). False: the process group, the shim a
# subreaper so that descendants that leave it are still found.
JOB_CGROUPS = True
# How many steps of niceness below the daemon every launched process (job, session, agent
# process) runs, its session's scheduling group too: when work saturates the node, the
# daemon and the node's other users still get the CPU they need at once (0: as the daemon).
# Where the v1 cpu controller is, all jobs share one group that weighs, however many run,
# as one process JOB_NICE steps below the daemon.
JOB_NICE = 10
USER_MAP: dict[str, str] = {}  # Django user name -> Unix account, for run_as "$user"

# A cluster node not heard from (its lease in the database) for NODE_LOST_AFTER seconds
# is lost: its waiting work returns to the queue, its sessions end, its running jobs say
# "not responding" and become LOST after NODE_DOWN_AFTER seconds.
NODE_LOST_AFTER = 30.0
NODE_DOWN_AFTER = 600.0

# Apps with executor "slurm": where Slurm's commands are (None: PATH) and its slurm.conf
# (None: Slurm's own default); how often one squeue looks at every job (s); how long a
# submission keeps trying while slurmctld is unreachable (s; 0: the job fails at once).
SLURM_BIN_DIR = None
SLURM_CONF = None
SLURM_TICK = 2.0
SLURM_SUBMIT_RETRY = 300.0
LAUNCHER_CONFIG = None

# Sessions (apps of kind "session") and the ParaViewWeb/wslink launcher REST API.
# Where LAUNCHER_CONFIG apps run: None is the launcher file's directory (wslink runs its
# apps in its working directory, so launcher files use relative paths), "$job_dir" each
# session's own directory, or a directory.
LAUNCHER_CWD = None
LAUNCHER_ENDPOINT = None  # "/paraview", or the endpoint LAUNCHER_CONFIG names
LAUNCHER_PROXY_FILE = None  # "<id> <host>:<port>" per ready session; the file's proxy_file
LAUNCHER_PROXY_FILE_MODE = 0o644
SESSION_CERT_KEY = "ec-p256"  # or "rsa-3072": key of the default per-session certificate
SESSION_CERT_DAYS = 30

# Jobs: each gets JOBS_DIR/<id> (its log, its files); working directories must lie under
# DATA_DIR, JOBS_DIR or one of JOB_ROOTS.
JOBS_DIR = None  # DATA_DIR/jobs
JOB_ROOTS: list[str] = []
# The disk: new work waits while DATA_DIR has less free space than this (bytes; 0: no
# watermark); a job whose log passes its app's max_output, else this (bytes; 0: none),
# is stopped.
DATA_DIR_MIN_FREE = 100 * 1024 * 1024
JOB_MAX_OUTPUT = 10 * 1024 ** 3
JOB_PROGRESS_INTERVAL = 1.0  # seconds between persisted progress updates of one job
OUTPUT_CHUNK = 1024 * 1024  # bytes read from a log at once
OUTPUT_MAX_PENDING = 8 * 1024 * 1024  # bytes a subscriber may have unsent before it waits

# The process agent (/agent/, smartmob-agent compatible): Procfile processes restarted
# until deleted; they die with the daemon.
AGENT_DIR = None  # DATA_DIR/agent: a directory per process (source, virtualenv, log)
AGENT_FILE_ROOTS: list[str] = []  # directories file:// source URLs may point into
# Who may create agent processes (they run commands of the user's own): staff only unless
# opened, e.g. {"groups": ["deployers"], "staff": True}; None: every logged-in user.
AGENT_ALLOW: dict | None = {"staff": True}
# URL prefixes ("https://artifacts.example/") or anchored regexps ("^https://...$") an
# http(s) source_url must match; None: any.
AGENT_SOURCE_ALLOW: list[str] | None = None
AGENT_MAX_DOWNLOAD = 100 * 1024 * 1024  # bytes of a source archive
AGENT_MAX_UNPACKED = 1024 * 1024 * 1024  # bytes an archive may unpack to
AGENT_DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a download fails
AGENT_BACKOFF_INITIAL = 0.1  # seconds before the first restart (0: at once)
AGENT_BACKOFF_FACTOR = 2.0
AGENT_BACKOFF_MAX = 30.0
AGENT_MIN_UPTIME = 10.0  # a run this long resets the backoff
AGENT_MAX_RESTARTS = 0  # restarts in a row before "fatal" (0: no limit); per process too
AGENT_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when a process is deleted
AGENT_STOP_GRACE = 3.0  # the same when the daemon stops (keep under SERVICE_STOP_TIMEOUT)
AGENT_KEEP_FILES = False  # keep a deleted process's directory
AGENT_CONSOLE_REPLAY = 100  # lines of the log an attached console gets first
AGENT_CONSOLE_MAX_PENDING = 1024 * 1024  # unsent characters before a console skips ahead
AGENT_CONSOLE_MAX_RATE = 4 * 1024 * 1024  # bytes/s a console gets at most (0: no limit)

# What this node offers the queue. cores/memory None = the machine's (memory in MiB).
# A licence is a count, or {"command": [argv]} printing the count (re-read every tick).
RESOURCES: dict = {"cores": None, "memory": None, "licenses": {}}
QUEUE_USER_LIMITS: dict = {"running": 0, "cores": 0}  # per user at once; 0 = no limit
QUEUE_RESERVE_AFTER = 600.0  # seconds a job waits before resources are held back for it
QUEUE_BACKFILL_DEPTH = 200  # queued jobs looked at per pass (as Slurm's bf_max_job_test)
QUEUE_TICK = 30.0  # seconds between safety passes (licence counts re-read)
