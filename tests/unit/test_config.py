import pytest

from zephserver import defaults
from zephserver.config import (
    SPEC,
    check_settings,
    default_values,
    dependency_order,
    load_settings,
    settings_from_values,
)
from zephserver.errors import SettingsError


def errors_of(settings):
    return [str(p) for p in check_settings(settings) if p.is_error]


def test_every_default_has_a_spec_and_back():
    """One declaration per setting: defaults and SPEC name the same settings."""
    assert set(default_values()) == set(SPEC)


def test_file_sets_only_what_it_changes(tmp_path):
    """Names the file does not set come from zephserver.defaults; paths derive from DATA_DIR."""
    path = tmp_path / "s.py"
    # (RUN_AS: a daemon started as root must say who work runs as; the suite runs as root)
    path.write_text(f"DATA_DIR = {str(tmp_path / 'data')!r}\nPORT_ZEPH = 6000\n"
                    "RUN_AS = 'root'\n")
    s = load_settings(str(path))
    assert s.PORT_ZEPH == 6000
    assert s.LOG_LEVEL == defaults.LOG_LEVEL
    assert str(tmp_path / "data" / "zephserver.pid") == s.LOCK_FILE
    assert s.CONFIGURATION_NETWORK_INTERFACE == s.CONFIGURATION_NETWORK_INTERFACE_SERVER
    assert errors_of(s) == []


def test_file_may_extend_a_default_list(tmp_path):
    """A settings file can import zephserver.defaults to extend a list."""
    path = tmp_path / "s.py"
    path.write_text("from zephserver import defaults\n"
                    "SERVICE_LIST = defaults.SERVICE_LIST + ['tests.support.services/Plain']\n"
                    f"DATA_DIR = {str(tmp_path)!r}\nRUN_AS = 'root'\n")
    s = load_settings(str(path))
    assert s.SERVICE_LIST[-1] == "tests.support.services/Plain"
    assert errors_of(s) == []


def test_env_var_names_the_file(tmp_path, monkeypatch):
    """$ZEPHSERVER_SETTINGS is used when --settings is not given."""
    path = tmp_path / "s.py"
    path.write_text("PORT_ZEPH = 6001\n")
    monkeypatch.setenv("ZEPHSERVER_SETTINGS", str(path))
    assert load_settings(None).PORT_ZEPH == 6001


def test_missing_file_and_syntax_error_are_settings_errors(tmp_path):
    """An absent or broken file is reported, not raised as a traceback."""
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(str(tmp_path / "nope.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("PORT_ZEPH = = 3\n")
    with pytest.raises(SettingsError, match="line 1"):
        load_settings(str(bad))


def test_all_problems_reported_at_once(tmp_path):
    """Several mistakes give one error each, in a single check."""
    s = settings_from_values(
        DATA_DIR=str(tmp_path), LOG_LEVEL="LOUD", PORT_ZEPH=70000,
        SERVICE_LIST=["no.such.module/Svc", "tests.support.services/NotAService"],
        TASKS_PATH={"x": "tests.support.services/Nope"})
    errors = errors_of(s)
    assert any("LOG_LEVEL" in e and "LOUD" in e for e in errors)
    assert any("PORT_ZEPH" in e and "70000" in e for e in errors)
    assert any("no.such.module" in e and "cannot import" in e for e in errors)
    assert any("NotAService" in e and "main, disable" in e for e in errors)
    assert any("task 'x'" in e for e in errors)
    assert len(errors) == 5


def test_uncreatable_lock_dir_is_an_error(tmp_path):
    """A LOCK_FILE whose directory cannot be created (a file stands there) is reported."""
    (tmp_path / "plain-file").write_text("")
    s = settings_from_values(DATA_DIR=str(tmp_path),
                             LOCK_FILE=str(tmp_path / "plain-file" / "x.pid"))
    assert any("LOCK_FILE" in e and "cannot create directory" in e for e in errors_of(s))


def test_long_socket_path_is_an_error(tmp_path):
    """A control socket path too long for sun_path is reported before binding."""
    s = settings_from_values(DATA_DIR=str(tmp_path),
                             CONFIGURATION_NETWORK_INTERFACE_SERVER=str(tmp_path / ("x" * 120)))
    assert any("too long for a UNIX socket" in e for e in errors_of(s))


def test_unknown_setting_is_a_warning(tmp_path):
    """A misspelt name is reported as a warning, not an error."""
    path = tmp_path / "s.py"
    path.write_text(f"DATA_DIR = {str(tmp_path)!r}\nLOG_LEVLE = 'DEBUG'\nRUN_AS = 'root'\n")
    problems = check_settings(load_settings(str(path)))
    assert [(p.level, p.message) for p in problems] == [("warning", "unknown setting LOG_LEVLE")]


def test_unknown_requirement_and_cycle(tmp_path):
    """requires naming a missing service is an error; so is a cycle."""
    s = settings_from_values(DATA_DIR=str(tmp_path),
                             SERVICE_LIST=["tests.support.services/Dependent"])
    assert any("requires 'trivial0'" in e for e in errors_of(s))
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        dependency_order({"a": ("b",), "b": ("a",)})


def test_dependency_order_puts_requirements_first():
    """Services come after what they require; ties keep their listed order."""
    assert dependency_order({"web": ("rooms", "sessions"), "rooms": (), "sessions": (),
                             "x": ()}) == ["rooms", "sessions", "web", "x"]


def test_cluster_list_entries_checked(tmp_path):
    """Cluster entries need hostname, address and port, and must include this node."""
    s = settings_from_values(DATA_DIR=str(tmp_path), NODE_NAME="c", CLUSTER_SERVER_LIST=[
        {"hostname": "a", "address": "127.0.0.1", "port": 1},
        {"hostname": "b", "address": "127.0.0.1"}])
    assert any("entry 1 lacks port" in e for e in errors_of(s))
    s = s.replace(CLUSTER_SERVER_LIST=[{"hostname": "a", "address": "x", "port": 1},
                                       {"hostname": "b", "address": "x", "port": 2}])
    assert any("NODE_NAME 'c'" in e for e in errors_of(s))


def test_number_settings_read_as_floats_and_integers_as_ints(tmp_path):
    """Validated once, typed: a service reads a setting as it is, never casts it."""
    path = tmp_path / "s.py"
    path.write_text(f"DATA_DIR = {str(tmp_path)!r}\nAGENT_GRACE = 2\nTASK_POOL_SIZE = 3\n")
    from zephserver.config import load_settings

    s = load_settings(str(path))
    assert type(s.AGENT_GRACE) is float
    assert s.AGENT_GRACE == 2.0
    assert type(s.TASK_POOL_SIZE) is int
    assert type(s.QUEUE_TICK) is float  # a default too


def test_an_app_on_slurm_needs_slurms_commands(tmp_path):
    """Settings naming a Slurm app are refused at start when sbatch & co are not found."""
    empty = tmp_path / "bin"
    empty.mkdir()
    path = tmp_path / "s.py"
    path.write_text(f"DATA_DIR = {str(tmp_path / 'data')!r}\nRUN_AS = 'root'\n"
                    f"SLURM_BIN_DIR = {str(empty)!r}\n"
                    "APPS = {'dyna': {'argv': ['lsdyna'], 'executor': 'slurm'}}\n")
    errors = errors_of(load_settings(str(path)))
    assert errors == [f"SLURM_BIN_DIR: app(s) dyna run on Slurm, and sbatch, squeue, "
                      f"scontrol, scancel are not found in {empty} (install slurm-client) "
                      "(Directory of sbatch, squeue, scontrol and scancel; None: PATH)"]


def test_an_app_must_be_able_to_run_somewhere(tmp_path):
    path = tmp_path / "s.py"
    path.write_text(f"DATA_DIR = {str(tmp_path / 'data')!r}\nRUN_AS = 'root'\n"
                    "NODE_NAME = 'n1'\n"
                    "APPS = {'solver': {'argv': ['x'], 'nodes': ['gpu', 'n7']}}\n")
    errors = errors_of(load_settings(str(path)))
    assert len(errors) == 1, errors
    assert errors[0].startswith("APPS: app 'solver': nodes ['gpu', 'n7'] match no node "
                                "(names and labels of CLUSTER_SERVER_LIST: n1)"), errors


def test_a_node_url_must_be_an_http_url(tmp_path):
    """A node's ``url`` is where clients (the web UI moving off a dead node) reach it."""
    path = tmp_path / "s.py"
    nodes = [{"hostname": "n1", "address": "10.0.0.1", "port": 5600,
              "url": "https://n1.example:8443"},
             {"hostname": "n2", "address": "10.0.0.2", "port": 5600, "url": "n2:5558/x"}]
    path.write_text(f"DATA_DIR = {str(tmp_path / 'data')!r}\nRUN_AS = 'root'\n"
                    f"NODE_NAME = 'n1'\nCLUSTER_SERVER_LIST = {nodes!r}\n"
                    "CLUSTER_SECRET = 'a secret long enough for the test'\n"
                    "DATABASE_URL = 'postgresql://u@db/zeph'\n")
    errors = errors_of(load_settings(str(path)))
    assert [e for e in errors if "url" in e] == [
        "CLUSTER_SERVER_LIST: entry 1 url 'n2:5558/x' is not an http:// or https:// URL "
        "(where clients reach that node) (Cluster nodes ({hostname, address, port}, "
        "optional labels and url); fewer than two = no cluster)"], errors
