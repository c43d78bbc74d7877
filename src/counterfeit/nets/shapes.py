"""Input-shape checks that turn a cryptic size mismatch deep in a network into a clear error."""

from __future__ import annotations

import torch

from counterfeit.errors import UserError


def check_image_batch(x: torch.Tensor, channels: int, multiple: int, network: str, min_size: int = 1) -> None:
    """Require `x` to be (B, channels, H, W) with H, W divisible by `multiple` and >= `min_size`.

    Raises UserError (a ValueError) naming the network, the offending size and the rule.
    """
    if x.ndim != 4:
        raise UserError(f"{network}: expected a (batch, channels, height, width) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise UserError(f"{network}: expected {channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise UserError(
            f"{network}: input height and width must be divisible by {multiple}, got {h}x{w} "
            f"(crop or pad the image to a multiple of {multiple})"
        )
    if h < min_size or w < min_size:
        raise UserError(f"{network}: input must be at least {min_size}x{min_size}, got {h}x{w}")
