"""Running a broker app module (seeds/002) where it can do no harm: a child process.

Real conduit modules were written for a command run at a terminal: ``get_password``
prompts, ``gen_config`` writes files next to wherever it was started. In a daemon, a
prompt must never wait (nor reach the operator's terminal), and a file must never land
outside the session. So the module's functions run in a child interpreter that:

- works in the session directory (relative paths land there);
- has no terminal: its own session (``/dev/tty`` cannot be opened) and stdin at end of
  file, so a prompt fails at once and the generated secret is used instead;
- refuses, through an audit hook, any write outside the session directory (``open``
  for writing, rename, remove, mkdir, chmod, links...): the module gets PermissionError,
  the refusal is printed to the session's log and the daemon's log names the path.

The daemon side is ``run_app_module``; the child side is this module's ``main``. The
job object goes in on one pipe and the answer comes back on another, both JSON; what
the module prints goes to the session's log. (It costs a Python start, about 50 ms,
paid only by apps that name a module.)
"""

import json
import os
import shlex
import subprocess
import sys
from typing import Any

MODULE_TIMEOUT = 15.0  # seconds a module's functions may take together
# Audit events that change the file system, and which of their arguments are paths
# written to (every path for rename and link: moving a file out is writing outside).
WRITE_EVENTS = {"os.rename": (0, 1), "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,),
                "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
                "os.symlink": (1,), "os.link": (0, 1), "shutil.rmtree": (0,),
                "shutil.copyfile": (1,), "shutil.copymode": (1,), "shutil.copystat": (1,),
                "os.mkfifo": (0,), "os.mknod": (0,), "os.setxattr": (0,)}
OPEN_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
ALLOWED_DEVICES = ("/dev/null",)


class ModuleFailed(Exception):
    """The module could not prepare the session; the message says why."""


def run_app_module(module: str, job: dict, secret: str, algorithm: str, user: str,
                   realm: str, session_dir: str, log_path: str) -> dict:
    """Run ``module``'s four functions for ``job`` in a confined child; its answer:
    ``{password, password_hash, config, cert, argv, notes}``. ModuleFailed says why not.
    """
    request = json.dumps({"job": job, "secret": secret, "algorithm": algorithm,
                          "user": user, "realm": realm}).encode()
    job_r, job_w = os.pipe()
    answer_r, answer_w = os.pipe()
    try:
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "zephserver.launch.broker_run", module],
                cwd=session_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, pass_fds=(job_r, answer_w),
                env={**_child_env(), "ZEPH_BROKER_FDS": f"{job_r},{answer_w}"})
    finally:
        os.close(job_r)
        os.close(answer_w)
    try:
        with os.fdopen(job_w, "wb") as f:
            f.write(request)
    except BrokenPipeError:
        pass  # it died before reading: its exit says why
    with os.fdopen(answer_r, "rb") as f:
        try:
            child.wait(MODULE_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise ModuleFailed(f"module {module} took more than {MODULE_TIMEOUT:g}s") \
                from None
        raw = f.read()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ModuleFailed(f"module {module} ended (exit {child.returncode}) without an "
                           "answer; see the session's log")
    if "error" in answer:
        raise ModuleFailed(answer["error"])
    return answer


def _child_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "PYTHONPATH", "VIRTUAL_ENV", "TZ")
    return {k: os.environ[k] for k in keep if k in os.environ}


# --- the child ---------------------------------------------------------------------------


def _inside(path: Any, root: str) -> bool:
    if isinstance(path, int):
        return True  # an fd already open: the open was checked
    real = os.path.realpath(os.fsdecode(path))
    return real in ALLOWED_DEVICES or os.path.commonpath([real, root]) == root


def confine(root: str) -> Any:
    """An audit hook refusing writes outside ``root`` (PermissionError)."""
    def refuse(path: Any) -> None:
        shown = os.path.abspath(os.fsdecode(path))
        print(f"[zephserver] refused: the app module writes outside the session "
              f"directory: {shown}", file=sys.stderr, flush=True)
        raise PermissionError(f"writing outside the session directory is refused: {shown}")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                bool((flags or 0) & OPEN_WRITE_FLAGS)
            if writes and path is not None and not _inside(path, root):
                refuse(path)
        elif event in WRITE_EVENTS:
            for i in WRITE_EVENTS[event]:
                if i < len(args) and args[i] is not None and not _inside(args[i], root):
                    refuse(args[i])
    return hook


def _argv(command: Any, module: str) -> list[str]:
    """``get_launch_cmd``'s answer as argv: a string (conduit's modules return one) is
    split as a shell would split words, and never given to a shell."""
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise ModuleFailed(f"module {module}: get_launch_cmd returned a command that "
                               f"cannot be split into words: {exc}") from None
    if not isinstance(command, list | tuple) or not command or not all(
            isinstance(a, str) for a in command):
        raise ModuleFailed(f"module {module}: get_launch_cmd must return a command line "
                           "string or a non-empty list of strings")
    return list(command)


def prepare(module_name: str, request: dict, root: str) -> dict:
    from zephserver.launch.broker import hash_password, load_app_module

    module = load_app_module(module_name)
    sys.addaudithook(confine(root))
    job, notes = request["job"], []
    try:
        password = module.get_password()
    except Exception as exc:  # EOFError from a prompt, OSError from getpass...
        password = None
        notes.append(f"get_password failed ({type(exc).__name__}: {exc}); the generated "
                     "secret is used")
    if not isinstance(password, str) or not password:
        password = request["secret"]
    password_hash = hash_password(password, request["algorithm"], request["user"],
                                  request["realm"])
    step = "gen_config"
    try:
        job["config"] = module.gen_config(job)
        step = "gen_cert"
        cert = module.gen_cert(job, password_hash)
        step = "get_launch_cmd"
        argv = _argv(module.get_launch_cmd(job), module_name)
    except ModuleFailed:
        raise
    except Exception as exc:
        raise ModuleFailed(f"module {module_name}: {step} raised {type(exc).__name__}: "
                           f"{exc}") from None
    for what, value in (("gen_config", job["config"]), ("gen_cert", cert)):
        paths = value.values() if isinstance(value, dict) else [value]
        outside = [p for p in paths if isinstance(p, str) and not _inside(p, root)]
        if outside:
            raise ModuleFailed(f"module {module_name}: {what} returned a path outside the "
                               f"session directory: {outside[0]}")
    return {"password": password, "password_hash": password_hash, "config": job["config"],
            "cert": cert, "argv": argv, "notes": notes}


def main(argv: list[str]) -> int:
    sys.dont_write_bytecode = True  # nothing of ours written anywhere
    job_fd, answer_fd = (int(x) for x in os.environ.pop("ZEPH_BROKER_FDS").split(","))
    with os.fdopen(job_fd, "rb") as f:
        request = json.load(f)
    out = os.fdopen(answer_fd, "w")
    try:
        answer = prepare(argv[1], request, os.path.realpath(os.getcwd()))
        text = json.dumps(answer)
    except ModuleFailed as exc:
        text = json.dumps({"error": str(exc)})
    except Exception as exc:
        text = json.dumps({"error": f"module {argv[1]}: {type(exc).__name__}: {exc}"})
    except SystemExit as exc:
        text = json.dumps({"error": f"module {argv[1]} called exit({exc.code})"})
    out.write(text)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
