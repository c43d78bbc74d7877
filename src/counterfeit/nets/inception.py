"""Inception-v3 feature extractor (pool3, 2048-d) for FID / KID, without torchvision.

Parameter names follow torchvision's `Inception3` state dict (`Conv2d_1a_3x3.conv.weight`,
`Mixed_5b.branch1x1.bn.running_mean`, ...), which is also the layout of pytorch-fid's
FID weights `pt_inception-2015-12-05-6726825d.pth`, the TensorFlow FID network ported to PyTorch.
Give the weights as a local file (nothing is downloaded):

- variant "fid" (default): pytorch-fid's FID Inception. Its blocks differ slightly from
  torchvision's: average pools exclude padding (TensorFlow behaviour) and the last block
  (`Mixed_7c`) max-pools in its pool branch. Use these weights for numbers comparable to
  published FIDs.
- variant "torchvision": torchvision's ImageNet `inception_v3_google-0cc3c7bd.pth`.

The classifier (`fc.*`, 1008 or 1000 classes) and torchvision's auxiliary head (`AuxLogits.*`)
are not needed for features and are ignored when present. Inputs are images in [-1, 1]
(both weight sets expect that range, torchvision's via its `transform_input`), grayscale is
repeated to RGB, and images are resized bilinearly to 299 x 299.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from counterfeit.errors import InputFileError, UserError
from counterfeit.torch_files import load_weights_only

VARIANTS = ("fid", "torchvision")
FEATURE_DIM = 2048
INPUT_SIZE = 299
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU; keys `conv.*`, `bn.*`."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool(x: torch.Tensor, tf_padding: bool) -> torch.Tensor:
    # TensorFlow's average pool ignores padded zeros; torchvision's counts them.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=not tf_padding)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int, tf_padding: bool) -> None:
        super().__init__()
        self.tf_padding = tf_padding
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x, self.tf_padding))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int, tf_padding: bool) -> None:
        super().__init__()
        c7 = channels_7x7
        self.tf_padding = tf_padding
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool(x, self.tf_padding))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """`pool`: "avg" (torchvision), "avg_tf" (FID, padding excluded) or "max" (FID's last block)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool(x, tf_padding=self.pool == "avg_tf")
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3Features(nn.Module):
    """Images (B, 1 or 3, H, W) in [-1, 1] -> pool3 features (B, 2048)."""

    def __init__(self, variant: str = "fid", resize: bool = True) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise UserError(f"Inception variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        self.resize = resize
        self.name = f"inception-v3-{variant}[random init]"
        tf = variant == "fid"
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32, tf)
        self.Mixed_5c = InceptionA(256, 64, tf)
        self.Mixed_5d = InceptionA(288, 64, tf)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, tf)
        self.Mixed_6c = InceptionC(768, 160, tf)
        self.Mixed_6d = InceptionC(768, 160, tf)
        self.Mixed_6e = InceptionC(768, 192, tf)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg_tf" if tf else "avg")
        self.Mixed_7c = InceptionE(2048, "max" if tf else "avg")
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"Inception features: expected images (B, 1 or 3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize and tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def load_weights(self, state: dict[str, torch.Tensor], source: str = "state dict") -> "InceptionV3Features":
        """Load a torchvision-layout state dict (classifier and aux head ignored); every feature key must fit."""
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
        missing = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in kept if k not in own]
        wrong = [f"{k} {tuple(kept[k].shape)} != {tuple(own[k].shape)}" for k in own
                 if k in kept and tuple(kept[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
            if wrong:
                parts.append(f"shape mismatch: {wrong[0]}")
            raise InputFileError(source, "not Inception-v3 weights in torchvision/pytorch-fid layout: " + "; ".join(parts))
        merged = {k: kept.get(k, own[k]) for k in own}
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in merged.items()})
        self.name = f"inception-v3-{self.variant}[{Path(str(source)).name}]"
        return self


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a .pth/.pt state dict (loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "weights file not found (give a local file: nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise InputFileError(path, f"cannot read safetensors ({err})") from None
    state = load_weights_only(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(path, "expected a state dict (parameter name -> tensor)")
    return state


def load_inception(path: str | os.PathLike, variant: str = "fid", device: torch.device | str = "cpu") -> InceptionV3Features:
    """An `InceptionV3Features` with weights from a local file, in eval mode on `device`."""
    net = InceptionV3Features(variant)
    net.load_weights(read_state_dict(path), source=str(path))
    return net.to(device).eval()
