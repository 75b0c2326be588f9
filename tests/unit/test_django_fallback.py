"""The web application is built by the first web request (zephserver.http.django_fallback)."""

import logging
import sys
import threading

import pytest

from tests.support.poll import poll_until
from zephserver.http.django_fallback import BuiltOnFirstCall

pytestmark = pytest.mark.timeout(30)


def answering(body: bytes):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body, environ["PATH_INFO"].encode()]
    return app


def test_built_by_the_first_request_not_before_and_once():
    builds = []
    lazy = BuiltOnFirstCall(lambda: builds.append(1) or answering(b"hi "))
    assert builds == []
    started = []
    assert lazy({"PATH_INFO": "/a"}, lambda status, headers: started.append(status)) \
        == [b"hi ", b"/a"]
    assert lazy({"PATH_INFO": "/b"}, lambda status, headers: started.append(status)) \
        == [b"hi ", b"/b"]
    assert builds == [1]
    assert started == ["200 OK", "200 OK"]


def test_requests_arriving_during_the_build_wait_for_it_and_it_happens_once():
    builds, release = [], threading.Event()

    def build():
        builds.append(threading.get_ident())
        assert release.wait(10)
        return answering(b"ok ")

    lazy = BuiltOnFirstCall(build)
    answers: dict[int, list] = {}

    def request(i: int) -> None:
        answers[i] = lazy({"PATH_INFO": f"/{i}"}, lambda status, headers: None)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    poll_until(lambda: len(builds) == 1, timeout=10, what="the first build")

    def in_call(t: threading.Thread) -> bool:
        frame = sys._current_frames().get(t.ident)
        while frame is not None:
            if frame.f_code is BuiltOnFirstCall.__call__.__code__:
                return True
            frame = frame.f_back
        return False

    try:
        # every request is inside the application while the build is still going
        poll_until(lambda: all(in_call(t) for t in threads), timeout=10,
                   what="every request waiting on the build")
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert len(builds) == 1
    assert answers == {i: [b"ok ", f"/{i}".encode()] for i in range(4)}


def test_a_build_that_fails_is_logged_and_tried_again_by_the_next_request(caplog):
    attempts = []

    def build():
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("no module named 'broken_middleware'")
        return answering(b"back ")

    lazy = BuiltOnFirstCall(build)
    with caplog.at_level(logging.ERROR, logger="zephserver.http.django_fallback"), \
            pytest.raises(ImportError, match="broken_middleware"):
        lazy({"PATH_INFO": "/"}, lambda status, headers: None)
    assert "the web application (Django) cannot be loaded" in caplog.text
    assert lazy({"PATH_INFO": "/x"}, lambda status, headers: None) == [b"back ", b"/x"]
    assert len(attempts) == 2
