"""Every console script behaves: its own name, a description, its exit codes and version
in --help, quiet when its reader leaves, and all of them as ``zephserver VERB``."""

import subprocess
import tomllib

import pytest

from tests.support.daemon import REPO, child_env, run_cli, script, write_settings
from zephserver import __version__
from zephserver.cli import VERBS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def test_zephserver_verb_covers_every_console_script():
    assert sorted(["zephserver", *(f"zephserver-{v}" for v in VERBS)]) == SCRIPTS
    listed = run_cli("zephserver", "--help").stdout
    for verb in VERBS:
        assert f"    {verb}" in listed, listed


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_names_the_program_describes_it_and_lists_its_exit_codes(name):
    result = run_cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name} "), result.stdout[:80]
    description = result.stdout.split("\n\n")[1]
    assert len(description.split()) >= 12, description
    assert "exit codes: 0 ok; 1 failed; 2 bad usage" in " ".join(result.stdout.split())
    version = run_cli(name, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"zephserver {__version__}")


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_reader_that_leaves_ends_the_output_quietly(name):
    """As ``name --help | head -0``: the pipe is closed before anything is written."""
    proc = subprocess.Popen([script(name), "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(), cwd=REPO)
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert err == b"", err.decode()
    assert proc.returncode == 0


def test_status_piped_into_head_ends_quietly(workdir, daemons):
    settings = write_settings(workdir, SERVICE_LIST=["tests.support.services/Trivial0"])
    daemon = daemons(settings).start()
    piped = subprocess.run(f"{script('zephserver-command')} --settings {settings} help "
                           "| head -1", shell=True, capture_output=True, text=True,
                           env=child_env(), cwd=REPO, timeout=30)
    assert piped.stderr == ""
    assert piped.stdout.strip() == "["
    assert daemon.cli("zephserver-stop").returncode == 0


def test_settings_errors_have_their_own_ids_and_hints_as_written(workdir):
    from zephserver.config import check_settings, load_settings

    settings = write_settings(workdir, LOG_LEVEL="LOUD", PORT_ZEPH=99999)
    problems = [p for p in check_settings(load_settings(str(settings))) if p.is_error]
    assert [p.id for p in problems] == ["zeph.E.LOG_LEVEL", "zeph.E.PORT_ZEPH"]
    assert problems[0].hint.startswith("DEBUG, INFO, WARNING, ERROR or CRITICAL")
    assert problems[1].hint == "HTTP + WebSocket port"
    result = run_cli("zephserver-start", "--settings", str(settings))
    assert result.returncode == 6
    assert "(HTTP + WebSocket port)" in result.stderr
