"""Session building blocks: ports, readiness scanning, the proxy map, launcher files,
session keys of an app definition, broker passwords and modules."""

import hashlib
import os
import socket
import stat
from pathlib import Path

import pytest

from tests.support.poll import poll_until
from tests.support.sessions import free_port_range, listening
from zephserver.launch.apps import AppConfigError, parse_apps
from zephserver.launch.broker import check_app_module, hash_password, verify_password
from zephserver.launch.interactive import ProxyMap, ReadyScanner, has_connections
from zephserver.launch.ports import PortPool, PortRange, bind_free
from zephserver.launch.wslink import convert, strip_comments


def test_bind_free_sees_a_listener_and_the_pool_skips_it():
    low, high = free_port_range(3)
    rng = (PortRange("localhost", low, high),)
    other = listening(low)
    try:
        assert not bind_free(low)
        pool = PortPool()
        assert pool.allocate(rng, 1) == ("localhost", low + 1)
        assert pool.allocate(rng, 2) == ("localhost", low + 2)
        assert pool.allocate(rng, 3) is None  # low is bound by another program
        assert pool.free_count(rng) == 1
        pool.release(1)
        assert pool.allocate(rng, 4) == ("localhost", low + 1)
        pool.reserve("localhost", low + 2, 2)  # idempotent for the same job
        assert pool.holder("localhost", low + 2) == 2
    finally:
        other.close()
    assert bind_free(low)


def test_ready_scanner_finds_a_line_split_across_chunks():
    seen = []
    scanner = ReadyScanner("Starting factory", lambda: seen.append(True))
    scanner.feed(0, b"loading...\nStarting fa")
    assert seen == []
    scanner.feed(23, b"ctory on port 9001\n")
    scanner.feed(50, b"Starting factory again\n")
    assert seen == [True]


def test_proxy_map_is_replaced_atomically_with_its_mode(tmp_path):
    path = tmp_path / "proxy.map"
    old_umask = os.umask(0o077)
    try:
        proxy = ProxyMap(str(path), 0o640)
        proxy.entries = {12: ("localhost", 9002), 3: ("node2", 9001)}
        proxy.write()
    finally:
        os.umask(old_umask)
    assert path.read_text() == "3 node2:9001\n12 localhost:9002\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["proxy.map"]
    inode = path.stat().st_ino
    again = ProxyMap(str(path), 0o640)  # a restart with the same sessions
    again.entries = dict(proxy.entries)
    again.write()
    assert path.stat().st_ino == inode  # unchanged: not rewritten
    again.entries.pop(12)
    again.write()
    assert path.read_text() == "3 node2:9001\n"
    assert path.stat().st_ino != inode


def test_has_connections_sees_an_established_connection():
    low, _ = free_port_range(1)
    server = listening(low)
    try:
        assert not has_connections(low)
        client = socket.create_connection(("127.0.0.1", low))
        accepted, _ = server.accept()
        assert has_connections(low)
        client.close()
        accepted.close()
        poll_until(lambda: not has_connections(low), 5, what="connection gone")
    finally:
        server.close()


def test_strip_comments_keeps_urls_inside_strings():
    text = '{"u": "ws://h:1/ws", // a comment\n "v": "/* not a comment */" /* one\n */}'
    assert strip_comments(text) == '{"u": "ws://h:1/ws", \n "v": "/* not a comment */" \n}'


WSLINK = {
    "configuration": {"host": "localhost", "port": 9000, "endpoint": "paraview",
                      "sessionURL": "ws://${host}:${port}/ws", "timeout": 25,
                      "fields": ["file"], "upload_dir": "/data", "colour": "blue",
                      "sanitize": {"file": {"type": "regexp", "regexp": "^[a-z]+\\.vtk$",
                                            "default": "cone.vtk"}}},
    "resources": [{"host": "localhost", "port_range": [9001, 9103]}],
    "properties": {"pvpython": "/opt/pv/bin/pvpython"},
    "sessionData": {"updir": "/Home"},
    "apps": {"visualizer": {"cmd": ["${pvpython}", "--port", "$port", "--file", "${file}",
                                    "--authKey", "$secret"], "ready_line": "Starting factory",
                            "dir": "/tmp"}},
    "extra": 1,
}


def test_a_wslink_file_becomes_session_apps_with_every_unsupported_key_reported():
    conf = convert(WSLINK)
    assert conf.endpoint == "/paraview"
    assert sorted(conf.warnings) == sorted([
        "extra: not a wslink launcher key, ignored",
        "configuration.colour: not a wslink launcher key, ignored",
        "configuration.upload_dir: not supported (serve static content and uploads with "
        "your web server); ignored",
        "apps.visualizer.dir: not a wslink launcher key, ignored"])
    app = parse_apps(conf.apps)["visualizer"]
    assert app.kind == "session"
    assert app.vars == {"pvpython": "/opt/pv/bin/pvpython"}
    assert app.session.ready_line == "Starting factory"
    assert app.session.uses_secret
    assert app.session.ports == (PortRange("localhost", 9001, 9103),)
    assert app.session.fields == ("file",)
    assert app.clean_params({"file": "a.vtk"}) == {"file": "a.vtk"}
    with pytest.raises(ValueError, match="does not match"):
        app.clean_params({"file": "a.vtk; rm -rf /"})


def test_a_wslink_command_using_an_unsanitized_client_key_is_a_settings_error():
    raw = {**WSLINK, "apps": {"v": {"cmd": ["${pvpython}", "--load", "${fileToLoad}"]}}}
    with pytest.raises(AppConfigError) as err:
        parse_apps(convert(raw).apps)
    assert "$fileToLoad is neither a param, a var nor" in str(err.value)


def test_session_keys_are_checked():
    def problems(**spec):
        try:
            parse_apps({"s": {"argv": ["/bin/true"], **spec}})
        except AppConfigError as exc:
            return exc.problems
        return []

    assert problems(kind="session", port_range=[9001, 9002]) == []
    assert any("port_range" in p for p in problems(kind="session"))
    assert any("port_range" in p for p in problems(kind="session", port_range=[9002, 80]))
    assert any("ready_line" in p for p in problems(kind="session", port_range=[9001, 9001],
                                                    ready_line="a\nb"))
    assert any("need kind 'session'" in p for p in problems(ready_line="ok"))
    assert any("$nope" in p for p in problems(kind="session", port_range=[9001, 9001],
                                              session_url="ws://$nope/"))
    assert any("lacks" in p for p in problems(kind="session", port_range=[9001, 9001],
                                              module="zephserver.examples.demo_job"))
    assert any("cannot be imported" in p for p in problems(
        kind="session", port_range=[9001, 9001], module="no.such.module"))
    assert any("shadow" in p for p in problems(
        kind="session", port_range=[9001, 9001],
        params={"port": {"type": "int", "min": 1, "max": 2, "default": 1}}))


def test_password_hashes():
    stored = hash_password("s3cret", "scrypt", "alice", "conduit")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret", stored)
    assert not verify_password("wrong", stored)
    assert hash_password("s3cret", "scrypt", "alice", "conduit") != stored  # salted
    digest = hash_password("test", "apache_md5_digest", "test", "test")
    # htdigest's line: user:realm:md5("user:realm:password")
    assert digest == "test:test:" + hashlib.md5(b"test:test:test").hexdigest()
    assert verify_password("test", digest)
    assert check_app_module("zephserver.examples.conduit_module") == []


def test_apps_take_wslink_sanitize_rules_as_params():
    app = parse_apps({"v": {"kind": "session", "argv": ["/bin/viewer", "$file"],
                            "port_range": [9001, 9001],
                            "sanitize": {"file": {"type": "inList", "list": ["a", "b"],
                                                  "default": "a"}}}})["v"]
    assert app.clean_params({}) == {"file": "a"}
    with pytest.raises(ValueError, match="must be one of"):
        app.clean_params({"file": "c"})  # refused, not replaced by the default


def test_default_certificates_ec_and_rsa(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from zephserver.launch.broker_helpers import write_self_signed

    for key_type, kind, size in (("ec-p256", ec.EllipticCurvePublicKey, 256),
                                 ("rsa-3072", rsa.RSAPublicKey, 3072)):
        paths = write_self_signed(str(tmp_path), key_type, "node1", key_type, 7)
        cert = x509.load_pem_x509_certificate(Path(paths["cert"]).read_bytes())
        assert isinstance(cert.public_key(), kind)
        assert cert.public_key().key_size == size
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert days == 7
        for path in paths.values():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
