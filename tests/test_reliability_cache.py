"""Faulty downloads and unusable caches: each is refused with one line, and nothing faulty is
ever kept in the cache or returned.

The server is a local HTTP server on 127.0.0.1 (nothing leaves the machine) whose handlers
wait at most :data:`HOLD` seconds. Faults: a truncated body, a body cut short without a
length, a flipped byte, HTTP 500, HTTP 404, a server that stalls mid-body, a server that never
answers, a corrupt or truncated cached file, a folder in the cached file's place, a
SLIMHUB_HOME that is a regular file, a cache folder that refuses writes (no permission, or a
read-only file system) and a corrupt file in such a folder, and the temporary file of a
download killed mid-transfer.
"""
import errno
import hashlib
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from slimhub.cli import main
from slimhub.model_zoo import create_model, hub

PAYLOAD = bytes(range(256)) * 300  # 76.8 kB
SHA = hashlib.sha256(PAYLOAD).hexdigest()
HOLD = 5.0
"""The longest a handler keeps a connection open without sending."""
TIMEOUT = 0.5
"""The client's timeout: a server silent this long has stalled."""
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Faulty(http.server.BaseHTTPRequestHandler):
    """``GET /<fault>/weights.bin`` answers :data:`PAYLOAD` spoiled as ``<fault>`` says."""

    timeout = HOLD  # a client that stops sending is dropped

    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        fault = self.path.split("/")[1]
        if fault in ("500", "404"):
            self.send_error(int(fault))
            return
        if fault == "silent":
            server.release.wait(HOLD)
            return
        body = bytes([PAYLOAD[0] ^ 1]) + PAYLOAD[1:] if fault == "flipped" else PAYLOAD
        self.send_response(200)
        if fault != "no_length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "stall":
            self.wfile.write(body[:1000])
            self.wfile.flush()
            server.release.wait(HOLD)
            return
        self.wfile.write(body[:len(body) // 2] if fault in ("truncated", "no_length") else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    srv.daemon_threads = True
    srv.requests, srv.release = [], threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMHUB_HOME", str(tmp_path / "home"))
    for name in ("SLIMHUB_OFFLINE", "SLIMHUB_MIRROR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home" / "hub"


def fetch(url, retries=1, **kwargs):
    return hub.download(url, sha256=SHA, retries=retries, backoff=0, timeout=TIMEOUT, progress=False, **kwargs)


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def assert_nothing_cached(server, cache, monkeypatch):
    """Neither the file nor a temporary file is left, and the cache does not claim the file."""
    assert listing(cache) == []
    monkeypatch.setenv("SLIMHUB_OFFLINE", "1")
    with pytest.raises(hub.DownloadError, match="weights.bin is not in the cache"):
        fetch(server.base + "/ok/weights.bin")
    monkeypatch.delenv("SLIMHUB_OFFLINE")


# ----------------------------------------------------------- faulty servers
def mismatch(body):
    return f": sha256 mismatch, expected {SHA}, got {hashlib.sha256(body).hexdigest()}; the file was removed"


FAULTS = {  # fault -> (error class, message after the URL, requests made with one retry)
    "truncated": (hub.DownloadError, " after 2 tries: got 38400 of 76800 bytes", 2),
    "no_length": (hub.ChecksumError, mismatch(PAYLOAD[:38400]), 1),
    "flipped": (hub.ChecksumError, mismatch(bytes([1]) + PAYLOAD[1:]), 1),
    "500": (hub.DownloadError, " after 2 tries: HTTP Error 500: Internal Server Error", 2),
    "404": (hub.DownloadError, ": HTTP 404 Not Found", 1),
    "stall": (hub.DownloadError, " after 2 tries: timed out", 2),
    "silent": (hub.DownloadError, " after 2 tries: timed out", 2),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_faulty_download_is_refused_and_not_kept(fault, server, cache, monkeypatch):
    kind, tail, requests = FAULTS[fault]
    url = f"{server.base}/{fault}/weights.bin"
    start = time.perf_counter()
    with pytest.raises(kind) as info:
        fetch(url)
    assert time.perf_counter() - start < 2 * TIMEOUT + 2  # a stalled server is given up on
    message = str(info.value)
    prefix = f"weights.bin from {url}" if kind is hub.ChecksumError else f"cannot download {url}"
    assert message == prefix + tail and "\n" not in message
    assert len(server.requests) == requests
    assert_nothing_cached(server, cache, monkeypatch)
    assert fetch(server.base + "/ok/weights.bin") == str(cache / "weights.bin")  # the cache still works
    assert listing(cache) == ["weights.bin"]


# ------------------------------------------------------------- bad caches
@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_cached_file_is_never_returned(damage, server, cache):
    cache.mkdir(parents=True)
    (cache / "weights.bin").write_bytes(b"junk" if damage == "corrupt" else PAYLOAD[:-1])
    with pytest.warns(UserWarning, match=f"removed cached {cache / 'weights.bin'}: sha256 .* does not match"):
        path = fetch(server.base + "/ok/weights.bin")
    assert open(path, "rb").read() == PAYLOAD and len(server.requests) == 1


def test_a_folder_in_place_of_the_cached_file(server, cache):
    (cache / "weights.bin").mkdir(parents=True)
    with pytest.raises(hub.CacheError) as info:
        fetch(server.base + "/ok/weights.bin")
    assert str(info.value) == (f"the download cache {cache} cannot be used: {cache / 'weights.bin'} is in the "
                               f"way: it is not a file; the folder comes from SLIMHUB_HOME={cache.parent}: "
                               "set SLIMHUB_HOME to a writable folder")
    assert server.requests == []


def test_slimhub_home_that_is_a_file(server, tmp_path, monkeypatch):
    home = tmp_path / "home_file"
    home.write_text("not a folder")
    monkeypatch.setenv("SLIMHUB_HOME", str(home))
    with pytest.raises(hub.CacheError) as info:
        fetch(server.base + "/ok/weights.bin")
    assert str(info.value) == (f"the download cache {home / 'hub'} cannot be used: {home} is a file, not a "
                               f"folder; the folder comes from SLIMHUB_HOME={home}: set SLIMHUB_HOME to a "
                               "writable folder")
    assert server.requests == [] and home.read_text() == "not a folder"


@pytest.fixture(params=[errno.EACCES, errno.EROFS], ids=["no_permission", "read_only_file_system"])
def refuse_writes(request, monkeypatch):
    """``refuse_writes(folder)``: creating or removing anything in ``folder`` fails with the
    errno, as in a folder without write permission or on a read-only file system (emulated at
    the os calls: permission bits do not bind root)."""
    code = request.param
    folders = []
    real_open, real_mkdir, real_remove = os.open, os.mkdir, os.remove

    def refused(path):
        path = os.path.abspath(os.fspath(path))
        if any(path.startswith(f + os.sep) for f in folders):
            raise OSError(code, os.strerror(code), path)

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            refused(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        refused(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_remove(path, *args, **kwargs):
        refused(path)
        return real_remove(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "remove", fake_remove)

    def refuse(folder):
        folders.append(os.path.abspath(folder))
        return os.strerror(code)
    return refuse


@pytest.mark.parametrize("chosen_by", ["SLIMHUB_HOME", "XDG_CACHE_HOME", "cache_dir"])
def test_a_cache_folder_that_refuses_writes(chosen_by, refuse_writes, server, tmp_path, monkeypatch):
    root = tmp_path / "shared"
    root.mkdir()
    reason = refuse_writes(root)
    kwargs = {}
    if chosen_by == "SLIMHUB_HOME":
        folder, source = root / "hub", f"SLIMHUB_HOME={root}"
        monkeypatch.setenv("SLIMHUB_HOME", str(root))
    elif chosen_by == "XDG_CACHE_HOME":
        folder, source = root / "slimhub" / "hub", f"XDG_CACHE_HOME={root} (SLIMHUB_HOME is not set)"
        monkeypatch.delenv("SLIMHUB_HOME")
        monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    else:
        folder, source = root, "the cache_dir argument"
        kwargs["cache_dir"] = str(root)
    fix = "pass a writable folder" if chosen_by == "cache_dir" else "set SLIMHUB_HOME to a writable folder"
    with pytest.raises(hub.CacheError) as info:
        fetch(server.base + "/ok/weights.bin", **kwargs)
    assert str(info.value) == (f"the download cache {folder} cannot be used: it is not writable ({reason}); "
                               f"the folder comes from {source}: {fix}")
    assert server.requests == [] and listing(root) == []


def test_a_read_only_cache_serves_good_files_and_refuses_a_corrupt_one(refuse_writes, server, cache):
    fetch(server.base + "/ok/weights.bin")
    (cache / "other.bin").write_bytes(b"junk")
    reason = refuse_writes(cache)
    assert fetch(server.base + "/ok/weights.bin") == str(cache / "weights.bin")
    with pytest.raises(hub.CacheError) as info:
        fetch(server.base + "/ok/other.bin")
    assert str(info.value) == (f"the download cache {cache} cannot be used: cached {cache / 'other.bin'} cannot "
                               f"be checked and replaced ({reason}); the folder comes from "
                               f"SLIMHUB_HOME={cache.parent}: set SLIMHUB_HOME to a writable folder")
    assert len(server.requests) == 1


def test_the_command_line_and_a_recipe_name_the_unusable_cache(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home_file"
    home.write_text("")
    monkeypatch.setenv("SLIMHUB_HOME", str(home))
    error = (f"the download cache {home / 'hub'} cannot be used: {home} is a file, not a folder; the folder "
             f"comes from SLIMHUB_HOME={home}: set SLIMHUB_HOME to a writable folder")
    assert main(["zoo", "download", "resnet20.fmnist_prune_sensitive50"]) == 2
    assert capsys.readouterr().err == f"slimhub zoo: {error}\n"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train_limit: 8, eval_limit: 8}\n"
                      "model: {name: resnet20.fmnist_prune_sensitive50, pretrained: true}\n")
    for check in (["--check"], []):
        assert main(["run", str(recipe), *check]) == 2
        assert capsys.readouterr().err == (f"slimhub run: {recipe}:2: model.pretrained: pretrained weights of "
                                           f"'resnet20.fmnist_prune_sensitive50' could not be fetched: {error}\n")
    with pytest.raises(hub.CacheError, match="is a file, not a folder"):
        create_model("resnet20.fmnist_prune_sensitive50", pretrained=True)


# -------------------------------------------------- killed downloads' files
def wait_for(condition, what, limit=60.0):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def temporary_files(cache):
    return [cache / n for n in listing(cache) if n.startswith(".tmp-")]


def test_the_file_of_a_killed_download_is_removed_by_the_next_one(server, cache):
    script = textwrap.dedent(f"""\
        from slimhub.model_zoo import hub
        hub.download({server.base + '/stall/weights.bin'!r}, sha256={SHA!r}, retries=0, timeout=30,
                     progress=False)
        """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def receiving():
        assert child.poll() is None, child.stderr.read().decode()
        return server.requests and temporary_files(cache)
    try:
        wait_for(receiving, "the download to start")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (left,) = temporary_files(cache)
    os.utime(left, (time.time() - 60, time.time() - 60))  # killed a minute ago
    assert fetch(server.base + "/ok/weights.bin") == str(cache / "weights.bin")
    assert listing(cache) == ["weights.bin"]


def test_files_of_downloads_in_progress_are_kept(server, cache):
    """A download stalled for longer than STALE_AFTER keeps its file: it holds its lock."""
    failures = []

    def stalled():
        with pytest.raises(hub.DownloadError, match="got 1000 of 76800 bytes") as info:
            hub.download(server.base + "/stall/weights.bin", sha256=SHA, retries=0, timeout=30, progress=False)
        failures.append(info.value)
    thread = threading.Thread(target=stalled)
    thread.start()
    wait_for(lambda: server.requests and temporary_files(cache), "the download to start")
    (live,) = temporary_files(cache)
    old = time.time() - hub.STALE_AFTER - 60
    os.utime(live, (old, old))
    young = cache / ".tmp-young123"
    young.write_bytes(b"")  # just created by mkstemp, not yet opened to write
    other = cache / ".tmp-export-abc"
    other.mkdir()  # not a download's file
    assert hub.remove_stale_downloads(str(cache)) == []
    assert fetch(server.base + "/ok/weights.bin") == str(cache / "weights.bin")
    assert sorted(temporary_files(cache)) == sorted([live, young, other])
    server.release.set()
    thread.join(HOLD + 30)
    assert len(failures) == 1
    assert sorted(temporary_files(cache)) == sorted([young, other])
