"""The pieces of the recipe comparison on small hand-made inputs: MMSegmentation config text read without being
run, the field normalisation, differences and the allowed-differences table."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.recipes.compare import ABSENT, AllowedDifference, Difference, differences, read_allowed, unexplained
from src.recipes.fields import box_scale
from src.recipes.mmseg import config_of_checkpoint_meta, mmseg_recipe, mmseg_test_cfg, parse_config_text

CONFIG_TEXT = """
import os
os.system("touch {marker}")
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(size=crop_size, bgr_to_rgb=True, mean=[1.0, 2.0, 3.0], std=[1.0, 1.0, 1.0]),
    decode_head=dict(type='FCNHead', num_classes=19, channels=512, norm_cfg=norm_cfg,
                     loss_decode=[dict(type='CrossEntropyLoss', loss_weight=1.0),
                                  dict(type='DiceLoss', loss_weight=3.0)]),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, -(-341))))
work_dir = os.path.join('a', 'b')
"""


def test_config_text_is_read_not_run(tmp_path: Path):
    marker = tmp_path / "ran"
    cfg = parse_config_text(CONFIG_TEXT.format(marker=marker))
    assert not marker.exists()  # the os.system line was never executed
    assert "work_dir" not in cfg  # a call is not a literal: skipped
    assert cfg["model"]["decode_head"]["norm_cfg"] == {"type": "SyncBN", "requires_grad": True}
    assert mmseg_test_cfg(cfg) == {"mode": "slide", "crop_size": [512, 512], "stride": [341, 341]}


def test_config_of_checkpoint_meta_reads_mmengine_and_0x_keys(tmp_path: Path):
    text = CONFIG_TEXT.format(marker=tmp_path / "x")
    assert config_of_checkpoint_meta({"cfg": text})["model"]["type"] == "EncoderDecoder"
    assert config_of_checkpoint_meta({"config": text})["model"]["type"] == "EncoderDecoder"
    assert config_of_checkpoint_meta({"cfg": "model = build()"}) is None
    assert config_of_checkpoint_meta({"cfg": "not python ((("}) is None
    assert config_of_checkpoint_meta(None) is None


def test_mmseg_fields_fill_loss_defaults_and_read_the_gpu_count():
    cfg = parse_config_text(CONFIG_TEXT.format(marker="/nonexistent/x"))
    cfg.update(
        train_dataloader={"batch_size": 2, "dataset": {"type": "CityscapesDataset", "pipeline": []}},
        test_dataloader={"dataset": {"pipeline": []}},
    )
    fields = mmseg_recipe(cfg, "fcn_r50-d8_4xb2-40k_cityscapes-512x1024")
    assert fields["batch.gpus"] == 4 and fields["batch.per_gpu"] == 2
    assert fields["decode_head.loss.1.use_sigmoid"] is True  # MMSegmentation 1.x's DiceLoss default
    assert fields["decode_head.loss.1.eps"] == 1e-3
    assert fields["model.norm"] == "SyncBN" and fields["model.channels_seen"] == "RGB"
    assert fields["train_pipeline.steps"] == ["Pad"]  # the preprocessor pads each batch to `size`


def test_keep_ratio_scales_are_boxes():
    assert box_scale([584, 565], True) == box_scale([565, 584], True) == [584, 565]
    assert box_scale([565, 584], False) == [565, 584]


def test_differences_and_the_allowed_table(tmp_path: Path):
    diffs = differences(
        {"a": 1, "b": [1.0, 2.0], "c": "x", "d": True}, {"a": 1.0, "b": [1.0, 2.5], "d": True, "e": None}
    )
    assert [d.field for d in diffs] == ["b", "c", "e"]
    assert diffs[1] == Difference("c", "x", ABSENT) and diffs[2] == Difference("e", ABSENT, None)
    assert differences({"t": True}, {"t": 1}) != []  # a bool is not a number
    doc = tmp_path / "r.md"
    doc.write_text(
        "# x\n\n## Allowed differences\n\n| field | recipes | here | MMSegmentation | why |\n|---|---|---|---|---|\n"
        '| `b` | `fcn_*` | `[1.0, 2.0]` | `*` | because |\n| `c` | `*` | `"x"` | `(absent)` | also |\n\n## Next\n'
    )
    rows = read_allowed(doc)
    assert rows == [
        AllowedDifference("b", "fcn_*", "[1.0, 2.0]", "*", "because"),
        AllowedDifference("c", "*", '"x"', "(absent)", "also"),
    ]
    assert unexplained("fcn_cityscapes", diffs, rows) == [diffs[2]]
    assert unexplained("pspnet_cityscapes", diffs, rows) == [diffs[0], diffs[2]]  # the row is for fcn_* only


def test_a_malformed_table_row_names_its_line(tmp_path: Path):
    doc = tmp_path / "r.md"
    doc.write_text(
        "## Allowed differences\n\n| field | recipes | here | MMSegmentation | why |\n|---|---|---|---|---|\n"
        "| b | `*` | `1` | `2` | no backticks |\n"
    )
    with pytest.raises(ValueError, match=r"r.md:5: 'b' is not in backticks"):
        read_allowed(doc)
