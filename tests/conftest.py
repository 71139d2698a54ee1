"""Shared test fixtures: the real-data samples shipped in tests/data/realdata (its README: source, licences), a local
server, a cache folder, one torch thread."""
from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO / "tests" / "data" / "realdata"  # the one path to the real samples; test modules import it


@pytest.fixture
def realdata() -> Path:
    return REALDATA


@pytest.fixture
def server(tmp_path):
    """(folder served, base url, list of request paths) of a loopback HTTP server."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith("/truncated/"):  # promises more bytes than it sends, then hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                self.wfile.write(b"x" * 1000)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SAGEPOSE_CACHE", str(folder))
    return folder


def _single_thread():
    """One intra-op thread while it runs: small models are as fast on one as on two, and far faster than on two when
    the other core is busy (OpenMP's threads then wait on each other: 560 s instead of 18 s measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


one_thread = pytest.fixture(_single_thread, name="one_thread")  # for one test
one_thread_module = pytest.fixture(_single_thread, scope="module", name="one_thread_module")  # for a whole module
