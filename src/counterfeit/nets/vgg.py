"""VGG19 feature extractor with torchvision's parameter names, for perceptual losses.

`VGG19Features.features` is laid out exactly like torchvision's `vgg19().features`
(conv at indices 0, 2, 5, 7, 10, ..., 34; ReLU after each; pooling at 4, 9, 18, 27, 36),
so torchvision's ImageNet state dict (`vgg19-dcbb9e9d.pth`, keys `features.0.weight` ...
`features.34.bias`, plus `classifier.*` which is ignored) loads with
`load_vgg19_weights(model, path)` -- without torchvision installed. A `.safetensors` copy of
that state dict loads the same way.

Layers are named like the MatConvNet VGG used by Chen & Koltun's released CRN code
(`conv1_2`, `conv2_2`, ...); as in that code, a layer's activation is taken *after* its
ReLU. The released code also replaced max pooling by average pooling (Gatys et al.'s
choice for image synthesis); `pool="avg"` (default) follows it, `pool="max"` is
torchvision's original network. Pooling has no parameters, so both load the same weights.

Inputs are images in [-1, 1] with 1 or 3 channels: `imagenet_normalize` maps them to [0, 1],
replicates grayscale to RGB and applies ImageNet's mean/std, as torchvision's weights expect.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from counterfeit.errors import InputFileError, UserError
from counterfeit.torch_files import load_weights_only

# torchvision's configuration "E" (VGG19): channels per conv, "M" = pooling.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
POOLS = ("avg", "max")


def _conv_indices() -> dict[str, int]:
    """'conv{block}_{i}' -> index of that conv in `features` (torchvision numbering)."""
    names: dict[str, int] = {}
    index, block, i = 0, 1, 1
    for v in VGG19_CFG:
        if v == "M":
            index += 1
            block, i = block + 1, 1
        else:
            names[f"conv{block}_{i}"] = index
            index += 2  # conv, then its ReLU
            i += 1
    return names


CONV_INDEX = _conv_indices()  # conv1_1 -> 0, conv1_2 -> 2, conv2_1 -> 5, ..., conv5_4 -> 34


def _torchvision_shapes() -> dict[str, tuple[int, ...]]:
    """Every `features.*` key of torchvision's vgg19 state dict with its shape."""
    shapes, in_ch = {}, 3
    for index, out_ch in zip(CONV_INDEX.values(), [v for v in VGG19_CFG if v != "M"]):
        shapes[f"features.{index}.weight"] = (int(out_ch), in_ch, 3, 3)
        shapes[f"features.{index}.bias"] = (int(out_ch),)
        in_ch = int(out_ch)
    return shapes


TORCHVISION_SHAPES = _torchvision_shapes()


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (B, 1 or 3, H, W) -> the input torchvision's VGG expects (grayscale replicated)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"VGG19: expected images of shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x + 1.0) * 0.5 - mean) / std


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the post-ReLU activations of `layers` (MatConvNet-style names).

    `forward(x)` takes [-1, 1] images (1 or 3 channels) and returns a list of activations in
    the order of `layers`; with `include_input=True` the normalised input comes first (the
    released CRN code's pixel term is computed on the VGG's input). Computation stops after the
    deepest requested layer, and only the layers up to it are built (a prefix of torchvision's
    `features`, same indices). Parameters never require gradients; the module stays in eval mode.
    Without loaded weights the features are random (deterministic from `init_seed`).
    """

    def __init__(self, layers: Sequence[str] = PAPER_LAYERS, pool: str = "avg", init_seed: int = 0) -> None:
        super().__init__()
        unknown = [n for n in layers if n not in CONV_INDEX]
        if unknown or not layers:
            raise UserError(f"VGG19 layers must be among {list(CONV_INDEX)}, got {list(layers)}")
        if pool not in POOLS:
            raise UserError(f"VGG19 pool must be one of {POOLS}, got {pool!r}")
        self.layers = tuple(layers)
        self.pool = pool
        self._taps = [CONV_INDEX[n] + 1 for n in self.layers]  # outputs of the ReLUs
        modules: list[nn.Module] = []
        in_ch = 3
        for v in VGG19_CFG:
            if len(modules) > max(self._taps):
                break
            if v == "M":
                modules.append(nn.AvgPool2d(2, 2) if pool == "avg" else nn.MaxPool2d(2, 2))
            else:
                # skip_init: no default initialisation, which would draw from the global RNG.
                modules += [nn.utils.skip_init(nn.Conv2d, in_ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(v)
        self.features = nn.Sequential(*modules)
        self.weights_loaded = False
        self._random_init(init_seed)
        self.requires_grad_(False)
        self.eval()

    def _random_init(self, seed: int) -> None:
        # torchvision's VGG init (Kaiming normal, fan_out), from a private generator so building
        # a random VGG never shifts the global RNG (keeps training resume-exact).
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    std = (2.0 / (m.out_channels * 9)) ** 0.5
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                    m.bias.zero_()

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)  # a fixed feature extractor: never in training mode

    def forward(self, x: torch.Tensor, include_input: bool = False) -> list[torch.Tensor]:
        h = imagenet_normalize(x)
        out = [h] if include_input else []
        wanted = {tap: i for i, tap in enumerate(self._taps)}
        found: list[torch.Tensor | None] = [None] * len(self._taps)
        last = max(self._taps)
        for index, module in enumerate(self.features):
            h = module(h)
            if index in wanted:
                found[wanted[index]] = h
            if index == last:
                break
        return out + [f for f in found if f is not None]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a torch file (weights_only load) or a .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "VGG19 weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises several types for bad files
            raise InputFileError(path, f"cannot read VGG19 weights ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    else:
        state = load_weights_only(path, failure="cannot read VGG19 weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(path, "not a state dict of tensors (expected torchvision's vgg19 state dict)")
    return state


def load_vgg19_weights(model: VGG19Features, path: str | os.PathLike) -> VGG19Features:
    """Load torchvision's `vgg19` ImageNet weights (`.pth` state dict or `.safetensors` copy) into `model`.

    Keys must be torchvision's: every `features.N.weight`/`features.N.bias` of the 16 convs
    (also those deeper than `model` uses); `classifier.*` is ignored. Missing, unexpected or
    mis-shaped keys raise InputFileError naming the first few (e.g. a VGG16 state dict is rejected).
    """
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    expected = TORCHVISION_SHAPES
    missing = sorted(set(expected) - set(state), key=_key_order)
    unexpected = sorted(set(state) - set(expected), key=_key_order)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        raise InputFileError(path, f"not a torchvision vgg19 state dict: {'; '.join(parts)}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise InputFileError(path, f"{key} has shape {tuple(state[key].shape)}, VGG19 needs {shape}")
    own = model.features.state_dict()
    model.features.load_state_dict({k: state[f"features.{k}"].float() for k in own})
    model.weights_loaded = True
    return model


def _key_order(key: str) -> tuple:
    parts = key.split(".")
    return tuple(int(p) if p.isdigit() else 0 for p in parts[1:2]) + (key,)


def build_vgg19(weights: str | os.PathLike | None, layers: Sequence[str] = PAPER_LAYERS, pool: str = "avg",
                device: torch.device | str = "cpu") -> VGG19Features:
    """A frozen VGG19 feature extractor, with torchvision's weights from `weights` when given.

    Without weights it warns loudly: a perceptual loss on random features still trains (random
    conv features are a known, weaker texture prior) but is not the paper's loss.
    """
    model = VGG19Features(layers, pool=pool)
    if weights:
        load_vgg19_weights(model, weights)
    else:
        warnings.warn(
            "VGG19: no --vgg-weights given, the perceptual loss uses RANDOM (untrained) VGG19 features. "
            "Pass torchvision's vgg19 state dict (vgg19-dcbb9e9d.pth) or a .safetensors copy for the paper's loss.",
            UserWarning,
            stacklevel=2,
        )
    return model.to(device)


__all__ = [
    "CONV_INDEX",
    "TORCHVISION_SHAPES",
    "PAPER_LAYERS",
    "VGG19Features",
    "build_vgg19",
    "imagenet_normalize",
    "load_vgg19_weights",
]
