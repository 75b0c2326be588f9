"""Modules a library imports at its top for work the daemon seldom or never does, loaded
by their first use instead.

A deferred module is a stand-in in ``sys.modules`` until then: ``import name`` binds the
stand-in, and the first attribute taken from it (``name.format``, ``from name import
x``) imports the module itself, which then answers for the stand-in. The libraries'
code is unchanged; a module that is not installed is not deferred, so its import fails
where it always did.
"""

import importlib
import importlib.util
import sys
import threading
import types

DEFERRED = (
    # django.db.backends imports it for SQL scripts (RunSQL, sqlflush) and SQLite's
    # schema introspection, which only migrations use: 0.5 MiB and 20 ms of a start
    "sqlparse",
)

_lock = threading.Lock()
_loaded: dict[str, types.ModuleType] = {}


class _StandIn(types.ModuleType):
    def __getattr__(self, attr: str):  # (only for names the stand-in itself lacks)
        return getattr(_load(self.__name__), attr)


def defer() -> None:
    """Put the stand-ins in place (once per process, before the libraries' imports)."""
    for name in DEFERRED:
        if name not in sys.modules and importlib.util.find_spec(name) is not None:
            sys.modules[name] = _StandIn(name)


def loaded(name: str) -> bool:
    """Whether a deferred module has been imported itself (by its first use)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, _StandIn)


def _load(name: str) -> types.ModuleType:
    with _lock:  # one import, whichever thread uses it first
        module = _loaded.get(name)
        if module is None:
            if isinstance(sys.modules.get(name), _StandIn):
                del sys.modules[name]
            module = _loaded[name] = importlib.import_module(name)
        return module
