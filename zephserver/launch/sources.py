"""Fetching and unpacking an application's source archive, safely.

- ``fetch``: ``http(s)://`` with a size limit and a timeout, or ``file://`` only under
  allowed roots; a cancel event is checked between chunks, so deleting a process while
  its source downloads returns at once.
- ``unpack``: zip or tar (gzip, bzip2, xz), recognised by their magic bytes, never by
  name. Absolute paths, ``..``, links, device files and archives over the size limit
  are refused before anything is written (tar links must stay inside the tree).
"""

import os
import re
import shutil
import stat
import threading
import urllib.parse

CHUNK = 64 * 1024


class SourceError(Exception):
    """What went wrong, for the user; ``phase`` is the failure state it leads to."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


class Cancelled(Exception):
    pass


def check_url(url: str, file_roots: list[str], allow: list[str] | None = None) -> str | None:
    """Why ``url`` may not be fetched, or None. ``allow``: the prefixes or anchored
    regexps (``^...``) an http(s) URL must match (AGENT_SOURCE_ALLOW; None: any)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            return "source_url has no host"
        if allow is not None and not any(
                re.match(rule, url) if rule.startswith("^") else url.startswith(rule)
                for rule in allow):
            return f"source_url {url} is not allowed here (AGENT_SOURCE_ALLOW)"
        return None
    if parts.scheme == "file":
        path = os.path.realpath(urllib.parse.unquote(parts.path))
        if any(os.path.commonpath([path, os.path.realpath(r)]) == os.path.realpath(r)
               for r in file_roots):
            return None
        return "file:// source URLs are allowed only under AGENT_FILE_ROOTS"
    return "source_url must be an http://, https:// or file:// URL"


def fetch(url: str, dest: str, max_bytes: int, timeout: float,
          cancel: threading.Event, request_id: str | None = None,
          allow: list[str] | None = None) -> None:
    """Download ``url`` to the file ``dest``. SourceError("download failure", ...).

    ``request_id`` goes out as ``X-Request-Id`` (smartmob's file servers log it);
    redirects are followed only where ``allow`` admits (AGENT_SOURCE_ALLOW)."""
    import urllib.error  # (with http.client: loaded only by the first download)
    import urllib.request

    class CheckedRedirects(urllib.request.HTTPRedirectHandler):
        """Follows a redirect only to a URL that ``allow`` admits, as the first one had to."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            why = check_url(newurl, [], allow)
            if why:
                raise SourceError("download failure", f"redirected: {why}")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    fail = "download failure"
    headers = {"X-Request-Id": request_id} if request_id else {}
    opener = urllib.request.build_opener(CheckedRedirects())
    try:
        with opener.open(urllib.request.Request(url, headers=headers),
                         timeout=timeout) as resp, open(dest, "wb") as out:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise SourceError(fail, f"the archive is {int(length)} bytes, over the "
                                        f"limit of {max_bytes}")
            size = 0
            while True:
                if cancel.is_set():
                    raise Cancelled()
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise SourceError(fail, f"the archive is over the limit of {max_bytes} "
                                            "bytes")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise SourceError(fail, f"HTTP {exc.code} {exc.reason} from {url}") from None
    except urllib.error.URLError as exc:
        raise SourceError(fail, f"cannot fetch {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise SourceError(fail, f"cannot fetch {url}: {exc}") from None
    if archive_kind(dest) is None:
        raise SourceError(fail, "the download is not a zip or tar archive")


def archive_kind(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"  # compressed: tarfile checks it is a tar inside
    if head[257:262] == b"ustar":
        return "tar"
    return None


def unpack(archive: str, dest: str, max_bytes: int) -> None:
    """Extract ``archive`` into the new directory ``dest``. SourceError("unpack failure")."""
    # (tarfile and zipfile: half a MiB a daemon keeps only once it has unpacked something)
    import tarfile
    import zipfile

    fail = "unpack failure"
    os.makedirs(dest)
    try:
        if archive_kind(archive) == "zip":
            _unzip(archive, dest, max_bytes)
        else:
            _untar(archive, dest, max_bytes)
    except SourceError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise SourceError(fail, f"the archive cannot be unpacked: {exc}") from None


def _safe_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return not name.startswith("/") and ".." not in parts and "\0" not in name


def _unzip(archive: str, dest: str, max_bytes: int) -> None:
    import zipfile

    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        for info in infos:
            mode = info.external_attr >> 16
            if not _safe_name(info.filename):
                raise SourceError("unpack failure", f"unsafe path in the archive: "
                                                    f"{info.filename!r}")
            # Entries made by ZipFile.writestr carry permission bits without type bits
            # (0o600): no type is a plain file. Only a type that says link, device, fifo
            # or socket is refused.
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise SourceError("unpack failure", f"the archive holds a link or special "
                                                    f"file: {info.filename!r}")
        if sum(i.file_size for i in infos) > max_bytes:
            raise SourceError("unpack failure", f"the archive unpacks to more than "
                                                f"{max_bytes} bytes")
        z.extractall(dest)
        for info in infos:  # keep the executable bits (zipfile drops them)
            mode = info.external_attr >> 16
            if mode & 0o111 and not info.is_dir():
                os.chmod(os.path.join(dest, info.filename), mode & 0o755)


def _untar(archive: str, dest: str, max_bytes: int) -> None:
    import tarfile

    with tarfile.open(archive) as t:
        members = t.getmembers()
        for m in members:
            if not _safe_name(m.name):
                raise SourceError("unpack failure", f"unsafe path in the archive: {m.name!r}")
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                raise SourceError("unpack failure", f"the archive holds a device or special "
                                                    f"file: {m.name!r}")
        if sum(m.size for m in members if m.isfile()) > max_bytes:
            raise SourceError("unpack failure", f"the archive unpacks to more than "
                                                f"{max_bytes} bytes")
        try:
            # 'data' refuses links pointing out of the tree and drops odd permissions
            t.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise SourceError("unpack failure", f"unsafe entry in the archive: {exc}") from None
