"""The manual: its reference pages are what the code generates now, it builds in strict
mode (a broken link fails), and the Grafana dashboard names only metrics that exist."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zephserver import metrics
from zephserver.reference import pages

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("name", sorted(pages()))
def test_reference_page_is_up_to_date(name):
    page = ROOT / "docs" / "reference" / name
    assert page.read_text() == pages()[name], "run `make docs` and commit docs/reference/"


def test_the_manual_builds_in_strict_mode(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                            text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "jsonrpc" / "index.html").exists()


def test_a_broken_link_fails_the_build(tmp_path):
    """Strict mode is on: the build above would catch a broken link."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](nowhere.md)\n")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:")[0]
    (tmp_path / "mkdocs.yml").write_text(config)
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build"], cwd=tmp_path,
                            capture_output=True, text=True,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin"})
    assert result.returncode != 0
    assert "nowhere.md" in result.stderr


def test_the_grafana_dashboard_names_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exported = {s for name, kind, _ in metrics.catalogue()
                for s in metrics.sample_names(name, kind)}
    named = {m for panel in dashboard["panels"] for target in panel["targets"]
             for m in re.findall(r"\bzephserver_[a-z_]+", target["expr"])}
    assert named, "the dashboard queries nothing"
    assert named <= exported, named - exported
    shown = {n for n in named}
    for family in ("zephserver_queue_length", "zephserver_jobs", "zephserver_rpc_duration"
                   "_seconds_bucket", "zephserver_cluster_peers_up"):
        assert family in shown, family
