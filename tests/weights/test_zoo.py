"""The model zoo: the table's shape (every name composes), download once with checksum, fast and clear offline."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from src.utils import resolvers  # noqa: F401  (${project_root:} in paths)
from src.weights.zoo import (
    ZOO_FILE,
    ZooDownloadError,
    ZooError,
    cached_file,
    fetch,
    load_zoo,
    resolve_weights,
    zoo_command_line,
    zoo_entry,
)

CONF = ZOO_FILE.parent
ZOO = load_zoo()
MMSEG_WEIGHTS = "https://download.openmmlab.com/mmsegmentation/v0.5/"


# ------------------------------------------------------------------------------------------- table shape
def test_table_lists_the_published_models():
    # one entry per name: YAML would silently keep the last of duplicated keys
    top_level = [ln.split(":")[0] for ln in ZOO_FILE.read_text().splitlines() if re.match(r"^[^\s#]", ln)]
    assert len(top_level) == len(set(top_level)) == len(ZOO)
    assert {"pspnet_r50-d8_4xb2-40k_cityscapes-512x1024", "segformer_mit-b0_8xb2-160k_ade20k-512x512"} <= set(
        ZOO
    )
    assert ZOO["pspnet_r50-d8_4xb2-40k_cityscapes-512x1024"].metrics["mIoU"] == 77.85
    models = {e.model for e in ZOO.values()}
    assert {
        "fcn_r50-d8",
        "pspnet_r18-d8",
        "deeplabv3plus_r101-d8",
        "unet-s5-d16_fcn",
        "upernet_r50",
    } <= models


@pytest.mark.parametrize("name", sorted(ZOO))
def test_entry_matches_mmsegmentation_naming(name: str):
    entry = ZOO[name]
    assert entry.url.startswith(MMSEG_WEIGHTS), entry.url
    # publish_model.py names the file <stem>-<first 8 hex digits of its SHA-256>.pth
    assert re.fullmatch(r".+-[0-9a-f]{8}\.pth", entry.filename)
    assert entry.filename.endswith(f"-{entry.sha256}.pth")
    algo = entry.url[len(MMSEG_WEIGHTS) :].split("/")[0]
    assert entry.mmseg_config == f"configs/{algo}/{name}.py"
    assert set(entry.metrics) in ({"mIoU", "mIoU(ms+flip)"}, {"mDice", "Dice"})
    assert all(0 < v < 100 for v in entry.metrics.values())


@pytest.mark.parametrize("model,dataset", sorted({(e.model, e.dataset) for e in ZOO.values()}))
def test_model_and_dataset_compose(model: str, dataset: str):
    if not (CONF / "model" / f"{model}.yaml").is_file():
        pytest.skip(f"conf/model/{model}.yaml does not exist yet")
    assert (CONF / "dataset" / f"{dataset}.yaml").is_file()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"dataset={dataset}"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert model_cfg["name"] == model
    assert cfg.dataset.name == dataset


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ZooError, match="did you mean pspnet_r50-d8_4xb2-40k_cityscapes-512x1024"):
        zoo_entry("pspnet_r50-d8_4xb2-40k_cityscapes-512x1025")


def test_recipe_and_weights_expand_the_entry_before_the_users_overrides():
    name = "segformer_mit-b0_8xb1-160k_cityscapes-1024x1024"
    entry = ZOO[name]
    argv = zoo_command_line(["src.train", f"recipe={name}", "dataset.batch_size=2"], key="recipe")
    assert argv[0] == "src.train" and argv[-2:] == [f"recipe={name}", "dataset.batch_size=2"]
    assert argv[1:4] == ["model=segformer_mit-b0", "dataset=cityscapes", "schedule=adamw_poly_160k"]
    assert "dataset.batch_size=1" in argv and "++model.test_cfg.mode=slide" in argv
    assert f"mmseg_config={entry.mmseg_config}" in argv
    # the user's value comes last (Hydra keeps the last); a DDP launcher re-running the line adds nothing
    assert argv.index("dataset.batch_size=1") < argv.index("dataset.batch_size=2")
    assert zoo_command_line(argv, key="recipe") == argv
    # weights=: only what builds and tests the model, not the schedule, batch or metric
    evaluated = zoo_command_line(["src.eval", f"weights={name}"])
    assert evaluated[1:3] == ["model=segformer_mit-b0", "dataset=cityscapes"]
    assert "++model.test_cfg.stride=[768,768]" in evaluated
    assert not any(
        a.startswith(("schedule=", "dataset.", "mmseg_config", "optimized_metric")) for a in evaluated
    )


def test_malformed_table_names_entry(tmp_path: Path):
    table = tmp_path / "zoo.yaml"
    table.write_text(yaml.safe_dump({"x": {"url": "http://h/x-0123abcd.pth", "model": "m", "dataset": "d"}}))
    with pytest.raises(ZooError, match=r"entry 'x' lacks \['sha256'\]"):
        load_zoo(table)


# -------------------------------------------------------------------------------------------- downloading
class _Server:
    """http.server on 127.0.0.1 in a thread, serving a folder and counting the GET requests per path."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "www"
    root.mkdir()
    srv = _Server(root)
    srv.root = root
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEGKIT_CACHE", str(folder))
    return folder


def publish(root: Path, stem: str, payload: bytes, sha: str | None = None) -> str:
    """Write `payload` as MMSegmentation publishes a file: `<stem>-<sha256[:8]>.pth`; returns the file name."""
    sha = sha or hashlib.sha256(payload).hexdigest()[:8]
    name = f"{stem}-{sha}.pth"
    (root / name).write_bytes(payload)
    return name


def write_table(path: Path, entries: dict[str, str]) -> Path:
    """A zoo table of `name -> url` entries (sha256 taken from the file name, as in conf/zoo.yaml)."""
    table = {
        name: {
            "url": url,
            "sha256": re.search(r"-([0-9a-f]{8})\.pth$", url).group(1),
            "model": "pspnet_r18-d8",
            "dataset": "cityscapes",
        }
        for name, url in entries.items()
    }
    path.write_text(yaml.safe_dump(table))
    return path


def test_download_once_verified_atomic(server: _Server, tmp_path: Path, cache: Path):
    payload = b"fake weights " * 1000
    name = publish(server.root, "fake_r18_20200101_000000", payload)
    table = write_table(tmp_path / "zoo.yaml", {"fake": f"{server.url}/{name}"})
    path = fetch("fake", progress=False, zoo_path=table)
    assert path == cache / "zoo" / name
    assert path.read_bytes() == payload
    assert server.requests == [f"/{name}"]
    assert not list(path.parent.glob("*.partial"))  # torch.hub's temporary file was renamed into place
    assert fetch("fake", progress=False, zoo_path=table) == path  # second time: from the cache
    assert server.requests == [f"/{name}"]


def test_checksum_mismatch_is_refused_and_nothing_kept(server: _Server, tmp_path: Path, cache: Path):
    name = publish(server.root, "fake_r18", b"not the published bytes", sha="deadbeef")
    table = write_table(tmp_path / "zoo.yaml", {"fake": f"{server.url}/{name}"})
    with pytest.raises(ZooDownloadError, match=r"Refused .*expected deadbeef"):
        fetch("fake", progress=False, zoo_path=table)
    assert not (cache / "zoo").exists() or not any((cache / "zoo").iterdir())


def test_corrupt_cached_file_is_replaced(server: _Server, tmp_path: Path, cache: Path, capsys):
    payload = b"the right bytes"
    name = publish(server.root, "fake_r18", payload)
    table = write_table(tmp_path / "zoo.yaml", {"fake": f"{server.url}/{name}"})
    target = cached_file(zoo_entry("fake", table))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    assert fetch("fake", progress=False, zoo_path=table).read_bytes() == payload
    assert "does not start with" in capsys.readouterr().err
    assert server.requests == [f"/{name}"]


def test_hand_placed_file_is_used_without_network(tmp_path: Path, cache: Path):
    payload = b"copied by hand"
    sha = hashlib.sha256(payload).hexdigest()[:8]
    table = write_table(tmp_path / "zoo.yaml", {"fake": f"http://unreachable.invalid/x/fake-{sha}.pth"})
    target = cache / "zoo" / f"fake-{sha}.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(payload)
    assert fetch("fake", progress=False, zoo_path=table) == target


def test_unreachable_url_fails_fast_with_url_and_path(tmp_path: Path, cache: Path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/pspnet/fake_r18_20200101-0123abcd.pth"
    table = write_table(tmp_path / "zoo.yaml", {"fake": url})
    started = time.perf_counter()
    with pytest.raises(ZooDownloadError) as err:
        fetch("fake", progress=False, zoo_path=table)
    assert time.perf_counter() - started < 5
    message = str(err.value)
    assert url in message
    assert str(cache / "zoo" / "fake_r18_20200101-0123abcd.pth") in message
    assert len(message.splitlines()) <= 10  # one screen
    assert not any((cache / "zoo").iterdir())


def test_file_url_and_zoo_reference(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch):
    payload = b"local mirror"
    name = publish(tmp_path, "mirror", payload)
    table = write_table(tmp_path / "zoo.yaml", {"mirrored": (tmp_path / name).as_uri()})
    monkeypatch.setenv("SEGKIT_ZOO", str(table))  # a table of one's own, as `weights=` would read it
    path, entry = resolve_weights("zoo:mirrored")
    assert entry.name == "mirrored" and path.read_bytes() == payload
    assert resolve_weights(tmp_path / name) == (tmp_path / name, None)  # a plain path stays a path


# ------------------------------------------------------------------- weights=<name> in the API and commands
SHARED_MMSEG = Path(__file__).resolve().parents[3] / "shared" / "mmseg" / "pspnet_r18-d8.pth"
needs_shared = pytest.mark.skipif(not SHARED_MMSEG.is_file(), reason=f"{SHARED_MMSEG} is not there")


@pytest.fixture
def mmseg_zoo(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared MMSegmentation-written pspnet_r18-d8 (19 classes) served over HTTP as zoo entry 'shared'."""
    payload = SHARED_MMSEG.read_bytes()
    name = publish(server.root, "pspnet_r18-d8_cityscapes", payload)
    table = write_table(tmp_path / "zoo.yaml", {"shared": f"{server.url}/{name}"})
    monkeypatch.setenv("SEGKIT_ZOO", str(table))
    return name


@pytest.fixture
def fake_cityscapes(tmp_path: Path) -> Path:
    """Two 64x128 val images with random train-id labels, in Cityscapes' layout."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split in ("train", "val"):
        images = root / "cityscapes" / "leftImg8bit" / split / "aachen"
        labels = root / "cityscapes" / "gtFine" / split / "aachen"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for i in range(2):
            stem = f"aachen_{i:06d}_000019"
            cv2.imwrite(str(images / f"{stem}_leftImg8bit.png"), rng.integers(0, 255, (64, 128, 3), np.uint8))
            cv2.imwrite(
                str(labels / f"{stem}_gtFine_labelTrainIds.png"), rng.integers(0, 19, (64, 128), np.uint8)
            )
    return root


@needs_shared
def test_segmenter_from_zoo_downloads_converts_and_predicts(mmseg_zoo: str, server: _Server, cache: Path):
    import numpy as np

    from src.serve.segmenter import Segmenter
    from src.weights.mmseg import load_mmseg_state_dict

    seg = Segmenter.from_zoo("shared")
    assert server.requests == [f"/{mmseg_zoo}"]
    assert (cache / "zoo" / mmseg_zoo).is_file()
    mm = load_mmseg_state_dict(SHARED_MMSEG)
    assert torch_equal(seg.segmentor.decode_head.conv_seg.weight, mm["decode_head.conv_seg.weight"])
    assert len(seg.classes) == 19 and seg.classes[0] == "road"  # the entry's dataset: Cityscapes
    mask = seg(np.zeros((32, 48, 3), np.uint8)).masks[0]
    assert mask.shape == (32, 48)
    Segmenter.from_zoo("shared")  # a second time from the cache
    assert server.requests == [f"/{mmseg_zoo}"]


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a.detach().cpu(), b.detach().cpu())


@needs_shared
def test_eval_and_infer_with_weights_name(mmseg_zoo: str, cache: Path, fake_cityscapes: Path, tmp_path: Path):
    from src.eval import evaluate
    from src.infer import infer
    from tests.helpers import compose_cfg

    def command_line(*args: str) -> list[str]:  # the overrides `python -m src.eval ...` composes
        return zoo_command_line(["src.eval", *args])[1:]

    # the entry's groups go first, so that the user's own overrides win; a group the user selects is kept
    assert command_line("weights=shared", "model=x") == ["dataset=cityscapes", "weights=shared", "model=x"]
    small = ["dataset.scale=[128,64]", f"paths.data_dir={fake_cityscapes}", "device=cpu"]
    overrides = command_line("weights=shared", "split=val", "num_workers=0", *small)
    cfg = compose_cfg("eval", overrides, tmp_path / "eval")
    report = evaluate(cfg)
    assert cfg.ckpt_path == str(cache / "zoo" / mmseg_zoo)
    assert cfg.model.name == "pspnet_r18-d8" and cfg.dataset.name == "cityscapes"
    assert cfg.dataset.data_root == str(fake_cityscapes / "cityscapes")  # the command's overrides applied
    assert 0 <= report["summary"]["aAcc"] <= 1 and len(report["per_class"]) == 19

    image = next((fake_cityscapes / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    out = tmp_path / "pred"
    overrides = command_line("weights=shared", f"input={image}", f"output={out}", *small)
    cfg = compose_cfg("infer", overrides, tmp_path / "infer")
    infer(cfg)
    assert (out / "pred" / f"{image.stem}.png").is_file()


def test_weights_and_ckpt_path_together_or_neither_is_a_config_error(tmp_path: Path):
    from src.utils.errors import ConfigError
    from src.weights.zoo import apply_zoo_weights
    from tests.helpers import compose_cfg

    cfg = compose_cfg("eval", ["weights=x", "ckpt_path=y.ckpt"], tmp_path / "a")
    with pytest.raises(ConfigError, match="give one"):
        apply_zoo_weights(cfg)
    cfg = compose_cfg("eval", ["weights=pspnet_r18-d8_4xb2-80k_cityscapes-512x1024"], tmp_path / "c")
    with pytest.raises(ConfigError, match="needs model=pspnet_r18-d8 dataset=cityscapes"):
        apply_zoo_weights(cfg)  # composed without what the command line adds
    cfg = compose_cfg("eval", [], tmp_path / "b")
    with pytest.raises(ConfigError, match="ckpt_path=<checkpoint file> or weights=<zoo name>"):
        apply_zoo_weights(cfg)


def test_train_load_from_zoo(make_train_cfg, tmp_path: Path, cache: Path, monkeypatch, caplog):
    """load_from=zoo:<name>: the file is fetched (here a file:// URL) into the cache, then fine-tuned from."""
    import logging

    import torch
    from hydra.utils import instantiate

    from src.train import train

    source = instantiate(make_train_cfg().model)
    torch.nn.init.normal_(source.decode_head.conv_seg.weight)
    blob = tmp_path / "blob.pth"
    torch.save({"state_dict": {f"segmentor.{k}": v for k, v in source.state_dict().items()}}, blob)
    name = publish(tmp_path, "mine", blob.read_bytes())
    monkeypatch.setenv(
        "SEGKIT_ZOO", str(write_table(tmp_path / "zoo.yaml", {"mine": (tmp_path / name).as_uri()}))
    )
    cfg = make_train_cfg(
        "load_from=zoo:mine", "schedule.max_steps=1", "schedule.val_interval=1", "test=false"
    )
    total = len(source.state_dict())
    with caplog.at_level(logging.INFO):
        train(cfg)
    assert (cache / "zoo" / name).is_file()
    assert f"load_from={cache / 'zoo' / name}: {total}/{total} tensors loaded" in caplog.text


def test_train_load_from_unreachable_zoo_fails_before_the_model_is_built(
    make_train_cfg, tmp_path, monkeypatch
):
    from src.train import train

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    table = write_table(tmp_path / "zoo.yaml", {"gone": f"http://127.0.0.1:{port}/gone-0123abcd.pth"})
    monkeypatch.setenv("SEGKIT_ZOO", str(table))
    built = []
    monkeypatch.setattr("src.train.build_module", lambda *a, **k: built.append(1))
    with pytest.raises(ZooDownloadError, match="gone-0123abcd.pth"):
        train(make_train_cfg("load_from=zoo:gone"))
    assert built == []
