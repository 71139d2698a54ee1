"""sagepose.hub: named weights fetched once into the cache, atomically and verified.

Downloads go to a loopback HTTP server (``http.server`` in a thread) serving a checkpoint the
test writes; nothing here touches the internet.
"""
import hashlib
import re
import socket

import pytest
import torch

import sagepose.api
from sagepose import hub
from sagepose.models import MODELS, build_model


@pytest.fixture
def served_tiny(server):
    """A vit-tiny checkpoint served at ``/tiny.pth``: (model, url, sha256, request log)."""
    root, base, requests = server
    torch.manual_seed(0)
    model = build_model("vit-tiny").eval()
    torch.save({"meta": {"epoch": 3}, "state_dict": model.state_dict()}, root / "tiny.pth")
    digest = hashlib.sha256((root / "tiny.pth").read_bytes()).hexdigest()
    return model, f"{base}/tiny.pth", digest, requests


def files_in(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_load_by_name_downloads_once_verifies_and_reuses_the_cache(served_tiny, cache, monkeypatch):
    model, url, digest, requests = served_tiny
    monkeypatch.setitem(hub.WEIGHTS, "tiny-test", hub.Weights("vit-tiny", url, sha256=digest))
    loaded = sagepose.api.load("tiny-test", fuse=False)
    assert not loaded.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    assert requests == ["/tiny.pth"]
    assert hub.cached_path("tiny-test") == cache / "weights" / "tiny-test" / "tiny.pth"
    assert files_in(cache) == ["tiny.pth"]  # no temporary left behind
    sagepose.api.load("tiny-test")
    assert hub.fetch("tiny-test") == hub.cached_path("tiny-test")
    assert requests == ["/tiny.pth"]  # the second and third calls made no request


def test_mmpose_style_sha256_prefix_is_checked(served_tiny, cache, monkeypatch):
    _, url, digest, _ = served_tiny
    monkeypatch.setitem(hub.WEIGHTS, "good-prefix", hub.Weights("vit-tiny", url, sha256_prefix=digest[:8]))
    assert hub.fetch("good-prefix", progress=False).is_file()
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    monkeypatch.setitem(hub.WEIGHTS, "bad-prefix", hub.Weights("vit-tiny", url, sha256_prefix=wrong))
    with pytest.raises(hub.ChecksumError, match=f"does not start with the published {wrong}"):
        hub.fetch("bad-prefix")
    assert not hub.cached_path("bad-prefix").exists()


def test_checksum_mismatch_discards_the_download(served_tiny, cache, monkeypatch):
    _, url, digest, _ = served_tiny
    monkeypatch.setitem(hub.WEIGHTS, "tampered", hub.Weights("vit-tiny", url, sha256="ab" * 32))
    with pytest.raises(hub.ChecksumError, match=f"has sha256 {digest}, expected {'ab' * 32}"):
        sagepose.api.load("tampered")
    assert files_in(cache) == []


def test_server_down_gives_a_clear_offline_error_and_writes_nothing(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(hub.WEIGHTS, "unreachable", hub.Weights("vit-tiny", f"http://127.0.0.1:{port}/w.pth"))
    with pytest.raises(hub.WeightsDownloadError, match="Offline") as info:
        sagepose.api.load("unreachable")
    assert str(hub.cached_path("unreachable")) in str(info.value)
    assert "sagepose.load('vit-tiny', checkpoint=PATH)" in str(info.value)
    assert files_in(cache) == []


def test_http_errors_and_broken_downloads_leave_no_file(server, cache, monkeypatch):
    _, base, _ = server
    monkeypatch.setitem(hub.WEIGHTS, "absent", hub.Weights("vit-tiny", f"{base}/absent.pth"))
    with pytest.raises(hub.WeightsDownloadError, match="HTTP 404"):
        hub.fetch("absent")
    monkeypatch.setitem(hub.WEIGHTS, "cut", hub.Weights("vit-tiny", f"{base}/truncated/w.pth"))
    with pytest.raises(hub.WeightsDownloadError, match="broke off|ended after"):
        hub.fetch("cut", progress=False)
    assert files_in(cache) == []


def test_every_named_checkpoint_points_at_an_official_address_and_a_zoo_model():
    sapiens2 = {k: w for k, w in hub.WEIGHTS.items() if k.startswith("sapiens2-")}  # named as the zoo rows
    for name, w in sapiens2.items():
        assert w.model in MODELS and name.removesuffix("-pretrain") == w.model, name
        size, task = w.model.removeprefix("sapiens2-"), "pretrain" if name.endswith("-pretrain") else "pose"
        assert w.url == (f"https://huggingface.co/facebook/sapiens2-{task}-{size}/resolve/main/"
                         f"sapiens2_{size}_{task}.safetensors"), name
        assert w.num_keypoints == 308 and w.sha256 is None and w.sha256_prefix is None, name  # none published
    assert set(sapiens2) == {f"sapiens2-{s}{t}" for s in ("0.4b", "0.8b", "1b", "5b") for t in ("", "-pretrain")}
    for name, w in hub.WEIGHTS.items():
        if name in sapiens2:
            continue
        assert w.model in MODELS, name
        assert name.startswith(w.model.removesuffix("-simple")) and name.endswith(("-coco", "-body7")), name
        assert re.match(r"https://(download\.openmmlab\.com/mmpose/|huggingface\.co/noahcao/sapiens-pose-coco/)",
                        w.url), name
        if "openmmlab" in w.url:  # MMPose names embed the first 8 hex digits of the sha256
            assert re.fullmatch(r"[0-9a-f]{8}", w.sha256_prefix) and f"-{w.sha256_prefix}_" in w.filename, name
        else:
            assert w.sha256 is None and w.sha256_prefix is None  # Sapiens publishes no hash
    assert {"vitpose-s-coco", "vitpose-b-coco", "vitpose-l-coco", "vitpose-h-coco", "sapiens-0.3b-coco",
            "sapiens-0.6b-coco", "sapiens-1b-coco", "sapiens-2b-coco", "hrnet-w32-coco", "hrnet-w48-coco",
            "hrformer-s-coco", "hrformer-b-coco"} <= set(hub.WEIGHTS)
    with pytest.raises(KeyError, match="unknown named weights"):
        hub.fetch("vitpose-z-coco")


def test_a_name_both_zoo_row_and_named_weights_fetches_unless_random_weights(served_tiny, cache, monkeypatch):
    """As ``sapiens2-1b``: the zoo row's name loads the official file; ``random_weights=True`` downloads nothing."""
    model, url, _, requests = served_tiny
    monkeypatch.setitem(hub.WEIGHTS, "vit-tiny", hub.Weights("vit-tiny", url))
    random = sagepose.api.load("vit-tiny", random_weights=True, fuse=False)
    assert requests == [] and files_in(cache) == []
    assert any(not torch.equal(random.state_dict()[k], v) for k, v in model.state_dict().items())
    loaded = sagepose.api.load("vit-tiny", fuse=False)
    assert requests == ["/tiny.pth"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)


def test_sapiens2_names_offline_say_where_to_put_the_file(cache, monkeypatch):
    entry = hub.WEIGHTS["sapiens2-1b-pretrain"]
    monkeypatch.setitem(hub.WEIGHTS, "sapiens2-1b-pretrain",
                        hub.Weights(entry.model, "http://127.0.0.1:9/" + entry.filename, num_keypoints=308))
    with pytest.raises(hub.WeightsDownloadError, match="Offline") as info:
        hub.fetch("sapiens2-1b-pretrain", timeout=5)
    assert str(cache / "weights" / "sapiens2-1b-pretrain" / "sapiens2_1b_pretrain.safetensors") in str(info.value)
    assert "sagepose.load('sapiens2-1b', checkpoint=PATH)" in str(info.value)
    assert files_in(cache) == []
