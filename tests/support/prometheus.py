"""A real Prometheus (Debian's package) in a temp folder, scraping one target; stopped
and removed on exit, even when the test fails half way."""

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request

from tests.support.daemon import short_tmpdir
from tests.support.poll import poll_until
from tests.support.postgres import free_port

BINARY = "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, target: str, interval: float = 0.5) -> None:
        self.dir = short_tmpdir("zprom")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "prometheus.yml").write_text(
            "global:\n"
            f"  scrape_interval: {int(interval * 1000)}ms\n"
            f"  scrape_timeout: {int(interval * 1000)}ms\n"
            "scrape_configs:\n"
            "  - job_name: zephserver\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Prometheus":
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        poll_until(lambda: self._get("/-/ready") is not None, 30, 0.05, "Prometheus ready")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.read()
        except OSError:
            return None

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` evaluates to now (empty if none yet)."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body is None:
            return []
        answer = json.loads(body)
        return answer["data"]["result"] if answer.get("status") == "success" else []

    def output(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]
