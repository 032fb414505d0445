"""`norm: syncbn` end to end on CPUs: a model built with SyncBatchNorm layers trains a step in a 2-process gloo
group (Lightning's `ddp_spawn`: torch.multiprocessing, world size 2), its checkpoint is saved, and one CPU process
loads it and predicts.

PyTorch's SyncBatchNorm synchronises batch statistics on GPUs only (its `forward` refuses CPU tensors inside a
process group: "SyncBatchNorm expected input tensor to be on GPU"), so on CPUs the module trains those layers as
BatchNorm (`src.models.layers.revert_sync_batchnorm`, as MMEngine does); the GPU path is `scripts/gpu_check.sh`'s.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from timm.layers import BatchNormAct2d, SyncBatchNormAct
from torch import nn

from src.data.io import load_image
from src.engine.module import TimmSyncBatchNorm
from src.models.layers import conv_module, convert_sync_batchnorm, revert_sync_batchnorm
from src.serve.segmenter import Segmenter
from src.train import build_datamodule, build_module, train
from tests.helpers import SMALL_MODEL, TINY_TRAIN, compose_cfg

SYNCBN = ["model.backbone.norm=syncbn", "model.decode_head.norm=syncbn", "model.auxiliary_head.norm=syncbn"]


def test_revert_sync_batchnorm_keeps_the_tensors_and_the_function() -> None:
    torch.manual_seed(0)
    # a plain SyncBatchNorm and the heads' conv -> SyncBN + ReLU block (timm's SyncBatchNormAct)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), conv_module(4, 4, norm="syncbn"))
    assert isinstance(net[2].bn, SyncBatchNormAct)
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].weight.uniform_(0.5, 2)
        net[2].bn.bias.uniform_(-1, 0)  # some outputs below zero: the ReLU matters
    params, buffers = [id(p) for p in net.parameters()], [id(b) for b in net.buffers()]
    x = torch.randn(2, 3, 8, 8)
    expected = net.eval()(x)  # eval: the running statistics (SyncBN needs no process group there)
    revert_sync_batchnorm(net)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
    assert type(net[1]) is nn.BatchNorm2d and type(net[2].bn) is BatchNormAct2d
    assert [id(p) for p in net.parameters()] == params and [id(b) for b in net.buffers()] == buffers
    torch.testing.assert_close(net(x), expected)


def test_syncbn_model_trains_in_two_cpu_processes_then_predicts_in_one(tmp_path: Path) -> None:
    overrides = [*TINY_TRAIN, f"paths.data_dir={tmp_path / 'data'}", *SMALL_MODEL, *SYNCBN]
    plain_cfg = compose_cfg("train", overrides[: -len(SYNCBN)], tmp_path / "plain")
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    GlobalHydra.instance().clear()
    norms = sum(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in instantiate(plain_cfg.model).modules()
    )
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    module = build_module(cfg, datamodule)
    synced = sum(isinstance(m, nn.SyncBatchNorm) for m in module.segmentor.modules())
    assert synced == norms > 10  # every norm of the backbone and both heads is a SyncBatchNorm
    before = {k: v.clone() for k, v in module.segmentor.state_dict().items()}

    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",  # torch.multiprocessing, gloo
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)],
    )
    trainer.fit(module, datamodule=datamodule)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 1
    state = {k.removeprefix("segmentor."): v for k, v in saved["state_dict"].items()}
    assert state.keys() == before.keys()  # SyncBN and BN share their keys
    trained = [k for k in before if "running_mean" in k and not torch.equal(state[k], before[k])]
    assert len(trained) >= synced // 2  # the step ran through the norms (statistics updated)

    # one CPU process, no process group: the checkpoint's config builds SyncBatchNorm again, which in eval mode
    # is BatchNorm of the running statistics
    seg = Segmenter.from_checkpoint(ckpt)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in seg.segmentor.modules())
    image = load_image(sorted((Path(cfg.dataset.data_root) / "img_dir" / "test").glob("*.png"))[0])
    (mask, _), *_ = seg.predict_arrays([image])
    reference = Segmenter.from_checkpoint(ckpt)
    revert_sync_batchnorm(reference.segmentor)  # the same model with plain BatchNorm: the same prediction
    (expected, _), *_ = reference.predict_arrays([image])
    assert mask.shape == image.shape[:2] and mask.max() < 6
    np.testing.assert_array_equal(mask, expected)


def test_lightning_sync_batchnorm_plugin_keeps_the_heads_relu() -> None:
    """runtime.sync_bn: Lightning's own conversion would leave conv_module's ReLU uncalled (the output goes
    negative); the project's plugin converts with timm, the function unchanged."""
    torch.manual_seed(0)
    block = conv_module(3, 4).eval()
    x = torch.randn(1, 3, 8, 8)
    expected = block(x)
    assert (expected >= 0).all()
    lightning_way = nn.SyncBatchNorm.convert_sync_batchnorm(conv_module(3, 4)).eval()
    assert (lightning_way(x) < 0).any()  # what the plugin avoids
    synced = convert_sync_batchnorm(block).eval()  # what the plugin applies off CPUs
    assert isinstance(synced.bn, SyncBatchNormAct)
    torch.testing.assert_close(synced(x), expected)
    torch.testing.assert_close(TimmSyncBatchNorm().revert(synced)(x), expected)
    # on a device other than the CPU (meta stands in for a GPU) the plugin converts; on the CPU it leaves BN
    assert isinstance(TimmSyncBatchNorm().apply(conv_module(3, 4).to("meta")).bn, SyncBatchNormAct)
    on_cpu = conv_module(3, 4)
    assert TimmSyncBatchNorm().apply(on_cpu) is on_cpu and type(on_cpu.bn) is BatchNormAct2d
    trainer = L.Trainer(
        accelerator="cpu", devices=1, sync_batchnorm=True, plugins=[TimmSyncBatchNorm()], logger=False
    )
    assert isinstance(trainer._accelerator_connector._layer_sync, TimmSyncBatchNorm)


def test_runtime_sync_bn_trains_in_two_cpu_processes(tmp_path: Path) -> None:
    """`runtime.sync_bn=true` under CPU DDP (2 gloo processes) through the training entry point: Lightning applies
    the plugin after `setup`, which used to convert BN to SyncBatchNorm there and fail in the first forward."""
    cfg = compose_cfg(
        "train",
        [
            *[o for o in TINY_TRAIN if not o.startswith("logger=")],
            "logger=tensorboard",  # Lightning's CSV logger loses its header between the spawned fit and test
            f"paths.data_dir={tmp_path / 'data'}",
            *SMALL_MODEL,
            "runtime.sync_bn=true",
            "runtime.trainer.accelerator=cpu",
            "runtime.trainer.devices=2",
            "+runtime.trainer.strategy=ddp_spawn",
            "schedule.max_steps=2",
        ],
        tmp_path / "run",
    )
    try:
        metrics = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2
    assert 0.0 <= metrics["test/mIoU"] <= 100.0 and np.isfinite(metrics["test/mIoU"])
