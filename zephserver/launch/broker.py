"""The conduit-style broker (seeds/002): app modules and the session's job object.

An app module customises how a session is prepared: its password, its configuration
file, its certificate and its command. Modules are checked at settings time (a missing
function is a settings error), and run on the job manager's thread while the session
is prepared, before its process starts.
"""

import base64
import hashlib
import importlib
import secrets
from types import ModuleType
from typing import Any

MODULE_FUNCTIONS = ("get_launch_cmd", "gen_config", "gen_cert", "get_password")
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


def load_app_module(name: str) -> ModuleType:
    """The module, or ImportError / ValueError saying what is wrong with it."""
    module = importlib.import_module(name)
    missing = [f for f in MODULE_FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise ValueError(f"module {name} lacks {', '.join(missing)} (import the defaults "
                         "from zephserver.launch.broker_helpers)")
    return module


def check_app_module(name: Any) -> list[str]:
    if not isinstance(name, str) or not name:
        return ["module must be a dotted module name"]
    try:
        load_app_module(name)
    except ValueError as exc:
        return [str(exc)]
    except Exception as exc:
        return [f"module {name} cannot be imported: {type(exc).__name__}: {exc}"]
    return []


def hash_password(password: str, algorithm: str, user: str, realm: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64); ``apache_md5_digest`` is Apache's htdigest
    line ``user:realm:md5(user:realm:password)``, only for apps that must read it."""
    if algorithm == "apache_md5_digest":
        digest = hashlib.md5(f"{user}:{realm}:{password}".encode(), usedforsecurity=False)
        return f"{user}:{realm}:{digest.hexdigest()}"
    salt = secrets.token_bytes(16)
    derived = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    b64 = base64.b64encode
    return (f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}$"
            f"{b64(salt).decode()}${b64(derived).decode()}")


def verify_password(password: str, stored: str) -> bool:
    if not stored.startswith("scrypt$"):
        user, realm, digest = stored.split(":", 2)
        return secrets.compare_digest(hash_password(password, "apache_md5_digest", user,
                                                    realm), stored)
    _, n, r, p, salt, digest = stored.split("$")
    derived = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32,
                             n=int(n), r=int(r), p=int(p))
    return secrets.compare_digest(derived, base64.b64decode(digest))
