"""Memory exhaustion without logging in: bodies are refused from their headers, before
they are read, and the daemon's memory stays where it was (issue 23)."""

import json
import shutil
import socket
from urllib.parse import urlparse

import pytest

from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.web import start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
BIG = 90 * 1024 * 1024


@pytest.fixture(scope="module")
def server():
    work = short_tmpdir()
    daemon = start_with_users(write_settings(
        work, DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"), child_env())
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    shutil.rmtree(work, ignore_errors=True)


def post(url: str, path: str, size: int, token: str | None = None, chunked: bool = False,
         send: int | None = None) -> tuple[int, dict, int]:
    """POST a body of ``size`` bytes (declared, or chunked), sending at most ``send`` of
    it while the server reads; (status, JSON answer, bytes the server took)."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=20)
    head = f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
    head += f"Authorization: Bearer {token}\r\n" if token else ""
    head += ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n")
    sock.sendall((head + "\r\n").encode())
    block, sent = b"x" * 65536, 0
    limit = size if send is None else send
    try:
        while sent < limit:
            piece = block[:min(len(block), limit - sent)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed: it will not read the rest
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or not _complete(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in rest else b""
    return int(status_line.split()[1]), json.loads(body or b"{}"), sent


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


@pytest.mark.parametrize("path", ["/paraview", "/agent/create-process", "/accounts/login/"])
def test_a_huge_declared_body_is_refused_before_it_is_read(server, path):
    status, answer, _ = post(server.url, path, BIG, send=1 << 20)
    assert status == 413, answer
    assert "larger than" in answer["error"]


def test_no_credentials_with_a_chunked_body_is_401_before_it_is_read(server):
    status, answer, _ = post(server.url, "/paraview", BIG, chunked=True, send=1 << 20)
    assert status == 401, answer


def test_a_logged_in_body_over_the_limit_is_413_and_the_daemon_reads_on(server):
    status, answer, sent = post(server.url, "/paraview", 200_000, server.tokens["alice"],
                                chunked=True)
    assert (status, sent) == (413, 200_000), answer
    assert "HTTP_MAX_JSON_BODY" in answer["error"]


def test_three_90_mb_posts_leave_memory_where_it_was(server, figure):
    idle = server.rss_mib()
    for path in ("/paraview", "/agent/create-process", "/paraview"):
        status, _, _ = post(server.url, path, BIG, send=BIG)
        assert status == 413
    grown = server.rss_mib() - idle
    figure(f"RSS idle {idle:.1f} MiB; after three unauthenticated 90 MB POSTs "
           f"+{grown:.1f} MiB (goal: within 10 MiB)")
    assert grown < 10
