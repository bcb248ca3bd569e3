"""The download cache against a local HTTP server on 127.0.0.1 (nothing leaves the machine)."""
import hashlib
import http.server
import os
import threading

import pytest

from slimhub.model_zoo import hub

PAYLOAD = bytes(range(256)) * 300  # 76.8 kB
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
UNREACHABLE = "http://127.0.0.1:9/nowhere/weights.bin"  # discard port: nothing listens


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        if server.fail_next > 0:
            server.fail_next -= 1
            self.send_error(503)
            return
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if server.truncate else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"/models/weights.bin": PAYLOAD}
    srv.requests, srv.fail_next, srv.truncate = [], 0, False
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMHUB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLIMHUB_OFFLINE", raising=False)
    monkeypatch.delenv("SLIMHUB_MIRROR", raising=False)
    return tmp_path / "home" / "hub"


def fetch(url, **kwargs):
    kwargs.setdefault("sha256", SHA)
    return hub.download(url, retries=kwargs.pop("retries", 0), backoff=0, timeout=5, progress=False, **kwargs)


def test_download_into_cache(server, cache):
    path = fetch(server.base + "/models/weights.bin")
    assert path == str(cache / "weights.bin")
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD
    assert os.listdir(cache) == ["weights.bin"]  # no temporary file left


def test_md5_is_accepted(server):
    path = fetch(server.base + "/models/weights.bin", sha256=None, md5=MD5)
    assert os.path.getsize(path) == len(PAYLOAD)


def test_cache_hit_needs_no_network(server):
    fetch(server.base + "/models/weights.bin")
    assert len(server.requests) == 1
    assert fetch(UNREACHABLE) == fetch(server.base + "/models/weights.bin")
    assert len(server.requests) == 1


def test_checksum_mismatch_names_file_and_digests_and_removes_it(server, cache):
    wrong = "0" * 64
    with pytest.raises(hub.ChecksumError) as e:
        fetch(server.base + "/models/weights.bin", sha256=wrong)
    message = str(e.value)
    assert "weights.bin" in message and wrong in message and SHA in message
    assert os.listdir(cache) == []


def test_corrupt_cached_file_is_fetched_again(server, cache):
    os.makedirs(cache)
    (cache / "weights.bin").write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="removed cached"):
        path = fetch(server.base + "/models/weights.bin")
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD
    assert len(server.requests) == 1


def test_retries_a_server_that_fails_once(server):
    server.fail_next = 1
    path = fetch(server.base + "/models/weights.bin", retries=2)
    assert os.path.getsize(path) == len(PAYLOAD)
    assert len(server.requests) == 2


def test_gives_up_after_the_retries(server, cache):
    server.fail_next = 5
    with pytest.raises(hub.DownloadError, match="after 3 tries.*503"):
        fetch(server.base + "/models/weights.bin", retries=2)
    assert len(server.requests) == 3
    assert os.listdir(cache) == []


def test_not_found_is_not_retried(server):
    with pytest.raises(hub.DownloadError, match="HTTP 404"):
        fetch(server.base + "/models/missing.bin", retries=3)
    assert len(server.requests) == 1


def test_partial_download_never_left_in_cache(server, cache):
    server.truncate = True
    with pytest.raises(hub.DownloadError, match="38400 of 76800 bytes"):
        fetch(server.base + "/models/weights.bin", retries=1)
    assert len(server.requests) == 2
    assert os.listdir(cache) == []


def test_offline_uses_only_the_cache(server, monkeypatch):
    monkeypatch.setenv("SLIMHUB_OFFLINE", "1")
    with pytest.raises(hub.DownloadError, match="weights.bin.*SLIMHUB_OFFLINE"):
        fetch(server.base + "/models/weights.bin")
    assert server.requests == []
    monkeypatch.setenv("SLIMHUB_OFFLINE", "0")
    path = fetch(server.base + "/models/weights.bin")
    monkeypatch.setenv("SLIMHUB_OFFLINE", "1")
    assert fetch(server.base + "/models/weights.bin") == path
    assert len(server.requests) == 1


@pytest.mark.parametrize("form", ["directory", "file_url"])
def test_local_mirror_replaces_the_url_base(tmp_path, monkeypatch, form, cache):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "weights.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv("SLIMHUB_MIRROR", str(mirror) if form == "directory" else mirror.as_uri())
    assert fetch(UNREACHABLE) == str(cache / "weights.bin")


def test_http_mirror_replaces_the_url_base(server, monkeypatch):
    monkeypatch.setenv("SLIMHUB_MIRROR", server.base + "/models/")
    fetch(UNREACHABLE)
    assert server.requests == ["/models/weights.bin"]


def test_file_missing_from_mirror_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMHUB_MIRROR", str(tmp_path))
    with pytest.raises(hub.DownloadError, match="weights.bin.*mirror of " + UNREACHABLE):
        fetch(UNREACHABLE, retries=3)


def test_progress_bar_names_the_file(server, capsys):
    hub.download(server.base + "/models/weights.bin", sha256=SHA, retries=0, progress=True)
    assert "weights.bin" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,words", [
    ({}, ["sha256", "md5", "neither"]),
    ({"sha256": SHA, "md5": MD5}, ["exactly one"]),
    ({"sha256": "abc"}, ["sha256", "64 hex", "'abc'"]),
    ({"md5": SHA}, ["md5", "32 hex"]),
])
def test_checksum_arguments_are_checked(kwargs, words):
    with pytest.raises(ValueError) as e:
        hub.download(UNREACHABLE, **kwargs)
    for word in words:
        assert word in str(e.value)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("SLIMHUB_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hub_dir() == str(tmp_path / "xdg" / "slimhub" / "hub")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.hub_dir() == str(tmp_path / "user" / ".cache" / "slimhub" / "hub")
