"""UNet backbone (Ronneberger et al., MICCAI 2015) in MMSegmentation's form (`mmseg/models/backbones/unet.py`,
1.2.2), the `UNet-S5-D16` of its medical configs (DRIVE, STARE, CHASE_DB1, HRF).

The encoder is `num_stages` conv blocks, each after a 2x2 max-pool (or a stride-2 first conv); the decoder
upsamples (bilinear x2 then a 1x1 conv-norm-act: MMSegmentation's `InterpConv`), concatenates the skip feature
and fuses them with a conv block. `forward` returns, as MMSegmentation, the bottleneck followed by every decoder
output: 5 maps for 5 stages, coarse to fine, the last at input resolution with `base_channels` channels. Heads
pick one with `in_index` (4 for the decode head, 3 for the auxiliary head).

Weights are initialised as MMSegmentation's `UNet.init_cfg` (Kaiming-normal fan-out for Conv2d, BN weight 1,
bias 0); there are no pretrained weights, as in MMSegmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.utils.checkpoint as cp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from src.models.layers import conv_module, norm_layer

UPSAMPLES = ("interp", "deconv")


class BasicConvBlock(nn.Module):
    """`num_convs` 3x3 conv-norm-ReLU; the first may have stride 2 and always has dilation 1, the others
    `dilation` (MMSegmentation's `BasicConvBlock`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_convs: int = 2,
        stride: int = 1,
        dilation: int = 1,
        norm: str = "bn",
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.convs = nn.Sequential(
            *[
                conv_module(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    3,
                    stride=stride if i == 0 else 1,
                    dilation=1 if i == 0 else dilation,
                    norm=norm,
                )
                for i in range(num_convs)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self.convs, x, use_reentrant=False)
        return self.convs(x)


class InterpConv(nn.Module):
    """x2 bilinear upsampling then a 1x1 conv-norm-ReLU (MMSegmentation's `InterpConv`, its default upsampler;
    `conv_first=True` puts the conv before the upsampling)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: str = "bn",
        with_cp: bool = False,
        conv_first: bool = False,
        kernel_size: int = 1,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        conv = conv_module(in_channels, out_channels, kernel_size, norm=norm)
        upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.interp_upsample = nn.Sequential(conv, upsample) if conv_first else nn.Sequential(upsample, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self.interp_upsample, x, use_reentrant=False)
        return self.interp_upsample(x)


class DeconvModule(nn.Module):
    """x2 transposed conv (kernel 4, stride 2, padding 1, with bias) -> norm -> ReLU (MMSegmentation's
    `DeconvModule`)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "bn", with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.deconv_upsampling = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            norm_layer(norm)(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self.deconv_upsampling, x, use_reentrant=False)
        return self.deconv_upsampling(x)


class UpConvBlock(nn.Module):
    """Decoder stage: bring the coarse feature to the skip's size and channels (upsampler, or a 1x1
    conv-norm-ReLU when the encoder did not downsample), concatenate `[skip, x]`, fuse with a conv block."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        num_convs: int = 2,
        dilation: int = 1,
        norm: str = "bn",
        with_cp: bool = False,
        upsample: str | None = "interp",
    ) -> None:
        super().__init__()
        self.conv_block = BasicConvBlock(
            2 * skip_channels, out_channels, num_convs, dilation=dilation, norm=norm, with_cp=with_cp
        )
        if upsample == "interp":
            self.upsample = InterpConv(in_channels, skip_channels, norm=norm, with_cp=with_cp)
        elif upsample == "deconv":
            self.upsample = DeconvModule(in_channels, skip_channels, norm=norm, with_cp=with_cp)
        elif upsample is None:
            self.upsample = conv_module(in_channels, skip_channels, 1, norm=norm)
        else:
            raise ValueError(f"upsample='{upsample}': expected one of {UPSAMPLES}")

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([skip, self.upsample(x)], dim=1))


class UNet(nn.Module):
    """UNet backbone with MMSegmentation's arguments.

    Args:
        in_channels: input image channels.
        base_channels: channels of the first stage; stage i has `base_channels * 2**i`.
        num_stages: encoder stages (5 for UNet-S5).
        strides: per encoder stage, 1 or 2 (a stride-2 first conv downsamples instead of the max-pool).
        enc_num_convs: convs per encoder stage.
        dec_num_convs: convs per decoder stage (`num_stages - 1` of them).
        downsamples: per stage after the first, whether a 2x2 max-pool precedes it (when its stride is 1).
        enc_dilations: dilation of the convs (but the first) of each encoder stage.
        dec_dilations: dilation of the convs (but the first) of each decoder stage.
        norm: "bn", "syncbn" or "gn" (MMSegmentation's configs use SyncBN; Lightning's `sync_batchnorm`
            converts BN the usual way).
        upsample: "interp" (MMSegmentation's default `InterpConv`) or "deconv" (`DeconvModule`).
        with_cp: gradient checkpointing of each conv block (less memory, slower).
        norm_eval: keep BN layers in eval mode (frozen statistics) while training.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        num_stages: int = 5,
        strides: Sequence[int] = (1, 1, 1, 1, 1),
        enc_num_convs: Sequence[int] = (2, 2, 2, 2, 2),
        dec_num_convs: Sequence[int] = (2, 2, 2, 2),
        downsamples: Sequence[bool] = (True, True, True, True),
        enc_dilations: Sequence[int] = (1, 1, 1, 1, 1),
        dec_dilations: Sequence[int] = (1, 1, 1, 1),
        norm: str = "bn",
        upsample: str = "interp",
        with_cp: bool = False,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        strides, enc_num_convs, enc_dilations = (
            tuple(int(v) for v in s) for s in (strides, enc_num_convs, enc_dilations)
        )
        dec_num_convs, dec_dilations = (tuple(int(v) for v in s) for s in (dec_num_convs, dec_dilations))
        downsamples = tuple(bool(v) for v in downsamples)
        for name, value, length in (
            ("strides", strides, num_stages),
            ("enc_num_convs", enc_num_convs, num_stages),
            ("enc_dilations", enc_dilations, num_stages),
            ("dec_num_convs", dec_num_convs, num_stages - 1),
            ("downsamples", downsamples, num_stages - 1),
            ("dec_dilations", dec_dilations, num_stages - 1),
        ):
            if len(value) != length:
                raise ValueError(
                    f"UNet {name}={list(value)}: expected {length} values for num_stages={num_stages}"
                )
        if any(s not in (1, 2) for s in strides):
            raise ValueError(f"UNet strides={list(strides)}: each must be 1 or 2")
        if upsample not in UPSAMPLES:
            raise ValueError(f"UNet upsample='{upsample}': expected one of {UPSAMPLES}")
        self.num_stages = num_stages
        self.strides = strides
        self.downsamples = downsamples
        self.norm_eval = norm_eval
        self.base_channels = base_channels

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        # per encoder stage, its downsampling factor with respect to the input (MMSegmentation counts a stage as
        # downsampling when its stride is 2 or its max-pool flag is set: `_check_input_divisible`)
        enc_reductions = [1]
        for i in range(num_stages):
            enc_block: list[nn.Module] = []
            if i != 0:
                if strides[i] == 1 and downsamples[i - 1]:
                    enc_block.append(nn.MaxPool2d(kernel_size=2))
                upsampled = strides[i] != 1 or downsamples[i - 1]
                enc_reductions.append(enc_reductions[-1] * (2 if upsampled else 1))
                self.decoder.append(
                    UpConvBlock(
                        in_channels=base_channels * 2**i,
                        skip_channels=base_channels * 2 ** (i - 1),
                        out_channels=base_channels * 2 ** (i - 1),
                        num_convs=dec_num_convs[i - 1],
                        dilation=dec_dilations[i - 1],
                        norm=norm,
                        with_cp=with_cp,
                        upsample=upsample if upsampled else None,
                    )
                )
            enc_block.append(
                BasicConvBlock(
                    in_channels,
                    base_channels * 2**i,
                    enc_num_convs[i],
                    stride=strides[i],
                    dilation=enc_dilations[i],
                    norm=norm,
                    with_cp=with_cp,
                )
            )
            self.encoder.append(nn.Sequential(*enc_block))
            in_channels = base_channels * 2**i
        self.divisor = enc_reductions[-1]
        # Outputs: the bottleneck, then the decoder stages from coarse to fine (as TimmBackbone's attributes).
        self.out_channels: list[int] = [base_channels * 2**i for i in reversed(range(num_stages))]
        self.reductions: list[int] = list(reversed(enc_reductions))
        self.init_weights()

    def init_weights(self) -> None:
        """MMSegmentation's default `init_cfg`: Kaiming (fan-out, normal) for Conv2d, constant 1 for norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def check_input_divisible(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.divisor or w % self.divisor:
            raise ValueError(
                f"UNet input size {(h, w)} (height, width) is not divisible by {self.divisor}, the whole "
                f"downsampling rate of its encoder (num_stages={self.num_stages}, strides={list(self.strides)}, "
                f"downsamples={list(self.downsamples)}): crop or pad inputs to a multiple of {self.divisor} "
                f"(e.g. data_preprocessor.size_divisor, or a slide test_cfg with such a crop_size)"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input_divisible(x)
        enc_outs = []
        for enc in self.encoder:
            x = enc(x)
            enc_outs.append(x)
        dec_outs = [x]
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](enc_outs[i], x)
            dec_outs.append(x)
        return dec_outs

    def train(self, mode: bool = True) -> UNet:
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
