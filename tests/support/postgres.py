"""A real PostgreSQL for the tests: started in a temporary folder on a free port, stopped
and removed afterwards, even when a test fails half way (shared/recipes.md).

    with Postgres() as pg:
        url = pg.database("zeph")      # postgresql://postgres@127.0.0.1:PORT/zeph
"""

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

from tests.support.daemon import short_tmpdir
from tests.support.server import ScratchServer


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres(ScratchServer):
    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address  # where it listens besides 127.0.0.1 (a test network's)
        self.bin = postgres_bin()
        self.dir = short_tmpdir("zpg")
        self.data = self.dir / "data"
        self.port = free_port()
        self.running = False

    def _run(self, *argv: str) -> None:
        # initdb refuses root: as root, run the server as the postgres account
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=60)

    def start(self) -> "Postgres":
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                  "-U", "postgres", "--no-sync")
        if self.address != "127.0.0.1":  # (a test network's nodes: its own subnet only)
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all samenet trust\n")
        self.start_again()
        return self

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                      "stop")

    def start_again(self) -> None:
        """Start the server (again, after ``stop``: same data, same port)."""
        self.running = True
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.dir / "pg.log"), "-w", "start", "-o",
                  f"-c listen_addresses={self.listen} -p {self.port} "
                  f"-k {self.dir} "
                  "-c fsync=off -c max_connections=200")

    @property
    def listen(self) -> str:
        return ",".join(dict.fromkeys(["127.0.0.1", self.address]))

    def url(self, name: str) -> str:
        return f"postgresql://postgres@{self.address}:{self.port}/{name}"

    def database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
