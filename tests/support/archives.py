"""Source archives for agent tests, and a real HTTP server that serves them."""

import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path


def make_zip(path: Path, files: dict[str, str], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            z.writestr(info, text)
    return path


def make_tar(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


class ArchiveServer:
    """Serves files of a directory over HTTP; ``/stall/...`` sends headers and a little
    data, then waits until released (a download that hangs); ``/redirect/<url>``
    answers 302 to <url>. ``requests`` records the path and headers of each GET."""

    def __init__(self, root: Path) -> None:
        self.release = threading.Event()
        self.requests: list[tuple[str, dict]] = []  # (path, headers) of every GET
        release, requests = self.release, self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                requests.append((self.path, dict(self.headers)))
                if self.path.startswith("/stall/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 * 1024 * 1024))
                    self.end_headers()
                    self.wfile.write(b"PK\x03\x04" + b"\0" * 1000)
                    self.wfile.flush()
                    release.wait(60)
                    return
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/redirect/"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
