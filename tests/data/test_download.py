import http.server
import shutil
import threading
from pathlib import Path

import pytest

from rec_lightning.data import download as dl
from rec_lightning.data.download import DownloadError, RemoteFile, download_category, git_blob_id

FILES = {"train/Shop.csv": b"a,b\n1,2\n" * 50, "index/Shop.index.json": b'{"0": ["<a_1>"]}'}


def blob(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    monkeypatch.setitem(dl.MANIFEST, "Shop", tuple(RemoteFile(rel, len(d), blob(d)) for rel, d in FILES.items()))
    return root


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (python's simple server ignores Range)."""

    requests: list = []

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        RangeHandler.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(mirror):
    handler = lambda *a, **k: RangeHandler(*a, directory=str(mirror), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_git_blob_id_matches_git(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object` of "hello\n"


def test_local_folder_source(mirror, tmp_path):
    out = tmp_path / "out"
    assert download_category("Shop", out, str(mirror)) == ["train/Shop.csv: downloaded and verified",
                                                           "index/Shop.index.json: downloaded and verified"]
    assert (out / "train/Shop.csv").read_bytes() == FILES["train/Shop.csv"]
    assert not (out / ".download").exists()
    assert download_category("Shop", out, str(mirror))[0] == "train/Shop.csv: up to date"


def test_http_source_resumes_a_partial_file(server, tmp_path):
    out = tmp_path / "out"
    part = out / ".download" / "train/Shop.csv.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(FILES["train/Shop.csv"][:100])  # an interrupted earlier run
    statuses = download_category("Shop", out, server)
    assert statuses[0] == "train/Shop.csv: resumed and verified"
    assert ("/train/Shop.csv", "bytes=100-") in RangeHandler.requests
    assert (out / "train/Shop.csv").read_bytes() == FILES["train/Shop.csv"]


def test_corrupt_source_is_rejected_and_nothing_written(mirror, tmp_path):
    (mirror / "train/Shop.csv").write_bytes(b"tampered" * 50)
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="do not match the published file"):
        download_category("Shop", out, str(mirror))
    assert not (out / "train/Shop.csv").exists()


def test_unreachable_server_keeps_partial(tmp_path, mirror):
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download_category("Shop", tmp_path / "out", "http://127.0.0.1:9", timeout=2)


def test_unknown_category():
    with pytest.raises(DownloadError, match="no published files are known for category 'Nope'"):
        download_category("Nope", "/tmp/x")


@pytest.mark.skipif(not (Path(__file__).resolve().parents[3] / "shared/data/Amazon/index").is_dir(), reason="real data absent")
def test_real_manifest_against_shared_copy(tmp_path):
    source = Path(__file__).resolve().parents[3] / "shared/data/Amazon"
    out = tmp_path / "out"
    shutil.copytree(source / "index", out / "index")  # already present files are verified, not fetched
    statuses = download_category("Industrial_and_Scientific", out, str(source))
    assert sum("up to date" in s for s in statuses) == 2 and sum("downloaded" in s for s in statuses) == 4
