"""Normalisation layer factory: one string option picks the layer everywhere in nets/."""

from __future__ import annotations

from torch import nn

NORM_KINDS = ("instance", "batch", "layer", "none")


def check_norm(kind: str, allowed: tuple[str, ...] = NORM_KINDS) -> str:
    """Return `kind` if it is one of `allowed`, else raise a ValueError naming the choices."""
    if kind not in allowed:
        raise ValueError(f"norm must be one of {allowed}, got {kind!r}")
    return kind


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2D normalisation layer for `channels` feature maps.

    - "instance": InstanceNorm2d(affine=False, no running stats), as in the CycleGAN reference code;
      per-image statistics, so train and eval behave the same.
    - "batch": BatchNorm2d (DCGAN, pix2pix).
    - "layer": GroupNorm(1, C) = layer norm over (C, H, W) with a per-channel affine; batch-independent,
      which is what a WGAN-GP critic needs and what the cascaded refinement network uses.
    - "none": Identity.
    """
    check_norm(kind)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def conv_bias(kind: str) -> bool:
    """Whether a conv followed by norm `kind` should carry a bias.

    Batch and layer norm have their own learned shift, which makes a conv bias redundant. The
    CycleGAN/pix2pix code keeps the bias with (non-affine) instance norm, and we follow it so
    parameter counts match the reference; with no norm the bias is genuinely needed.
    """
    return check_norm(kind) in ("instance", "none")
