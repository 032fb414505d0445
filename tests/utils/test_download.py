"""The one downloader (`src.utils.download`): resume of an interrupted part, a server that ignores Range, the
checksum (a prefix is enough) checked before the file takes its name, the part kept on a network error."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.utils.download import ChecksumError, download_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    ranges = True  # honour Range requests (a class attribute the tests switch)
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Handler.seen.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range") and _Handler.ranges:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen, _Handler.ranges = [], True
    yield f"http://127.0.0.1:{server.server_port}/file.bin"
    server.shutdown()


def test_an_interrupted_part_is_continued_with_a_range_request(url: str, tmp_path: Path):
    target = tmp_path / "dl" / "file.bin"
    target.parent.mkdir()
    (tmp_path / "dl" / "file.bin.part").write_bytes(PAYLOAD[:300_000])  # left by an interrupted download
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert download_file(url, target, sha[:8], progress=False) == target
    assert target.read_bytes() == PAYLOAD and _Handler.seen == ["bytes=300000-"]
    assert not (tmp_path / "dl" / "file.bin.part").exists()


def test_a_server_without_ranges_sends_the_whole_file_again(url: str, tmp_path: Path):
    _Handler.ranges = False
    target = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes")
    download_file(url, target, hashlib.md5(PAYLOAD).hexdigest(), "md5", progress=False)
    assert target.read_bytes() == PAYLOAD


def test_a_wrong_checksum_keeps_nothing(url: str, tmp_path: Path):
    target = tmp_path / "file.bin"
    with pytest.raises(ChecksumError, match="expected 00000000"):
        download_file(url, target, "00000000", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_network_error_keeps_the_part_for_the_next_call(tmp_path: Path):
    target = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"begun")
    with pytest.raises(urllib.error.URLError):
        download_file(
            "http://127.0.0.1:9/file.bin", target, timeout=2, progress=False
        )  # port 9: nothing listens
    assert (tmp_path / "file.bin.part").read_bytes() == b"begun" and not target.exists()
