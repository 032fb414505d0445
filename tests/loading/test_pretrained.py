"""Models shared as the field shares them: `Segmenter.save_pretrained` -> a folder of safetensors + config.json +
model card -> `from_pretrained` / `src.eval ckpt_path=<folder>`; Hub ids through huggingface_hub, offline first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from src.loading.pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, HubError
from src.loading.sources import load_model
from src.serve.segmenter import Segmenter
from src.utils.errors import CheckpointError, MissingFileError
from tests.helpers import TrainedRun, run_eval


@pytest.fixture(scope="module")
def saved(trained_run: TrainedRun, tmp_path_factory) -> tuple[Segmenter, object]:
    seg = Segmenter.from_checkpoint(trained_run.ckpt)
    folder = seg.save_pretrained(tmp_path_factory.mktemp("pretrained") / "model")
    return seg, folder


def test_round_trip_gives_equal_logits_and_masks(saved, trained_run: TrainedRun):
    seg, folder = saved
    assert {p.name for p in folder.iterdir()} == {WEIGHTS_NAME, CONFIG_NAME, CARD_NAME}
    again = Segmenter.from_pretrained(folder)
    assert again.classes == seg.classes and again.palette == seg.palette
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.segmentor(x), seg.segmentor(x), rtol=0, atol=0)
    images = sorted((trained_run.data_root / "img_dir" / "test").glob("*.png"))[:2]
    for a, b in zip(seg(images).masks, again(images).masks, strict=True):
        np.testing.assert_array_equal(a, b)
    # no pickle: the weights are safetensors, the config plain JSON
    assert (folder / WEIGHTS_NAME).read_bytes()[
        8:9
    ] == b"{"  # safetensors: an 8-byte length, then a JSON header
    assert (
        json.loads((folder / CONFIG_NAME).read_text())["config"]["model"]["name"]
        == seg.meta["config"]["model"]["name"]
    )


def test_the_card_holds_the_runs_metrics_command_dataset_and_license(saved, trained_run: TrainedRun):
    _, folder = saved
    card = (folder / CARD_NAME).read_text()
    assert card.startswith("---\nlicense: apache-2.0\n")
    assert f"{100 * trained_run.metrics['test/mIoU']:.2f}" in card  # the record's test mIoU
    assert "python -m src.train " in card and "shapes" in card and "## License" in card


def test_eval_of_the_folder_gives_the_checkpoints_own_test_miou(saved, trained_run: TrainedRun, tmp_path):
    _, folder = saved
    from_folder = run_eval(tmp_path / "folder", folder)
    from_ckpt = run_eval(tmp_path / "ckpt", trained_run.ckpt)
    assert from_folder["summary"]["mIoU"] == pytest.approx(from_ckpt["summary"]["mIoU"])
    assert from_folder["summary"]["mIoU"] == pytest.approx(
        trained_run.metrics["test/mIoU"], abs=1e-6
    )  # fractions


def test_weights_that_do_not_fit_the_config_are_refused_naming_both(saved, tmp_path):
    _, folder = saved
    other = tmp_path / "other"
    other.mkdir()
    (other / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes())
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["config"]["model"]["decode_head"]["channels"] = 7  # another model than the one saved
    (other / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        Segmenter.from_pretrained(other)
    text = str(err.value)
    assert (
        str(other / WEIGHTS_NAME) in text and str(other / CONFIG_NAME) in text and "of another shape" in text
    )
    (other / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        Segmenter.from_pretrained(other)


def test_hub_ids_without_network_are_one_short_error(saved, monkeypatch):
    seg, _ = saved
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"huggingface-cli download someone/no-such-model --local-dir"):
        Segmenter.from_pretrained("someone/no-such-model")
    with pytest.raises(HubError, match=r"huggingface-cli upload someone/model"):
        seg.push_to_hub("someone/model")


def test_a_missing_checkpoint_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(MissingFileError):
        load_model(tmp_path / "run" / "last.ckpt")
