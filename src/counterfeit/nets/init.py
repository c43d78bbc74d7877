"""Weight initialisation shared by the image networks (DCGAN / pix2pix / CycleGAN convention)."""

from __future__ import annotations

from torch import nn

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise every layer of `module` in place and return it.

    Conv / transposed-conv / linear weights ~ N(0, std), biases 0; affine norm layers get
    weight ~ N(1, std), bias 0 -- the scheme of the DCGAN paper and the CycleGAN/pix2pix code.
    Norm layers without affine parameters (e.g. CycleGAN's InstanceNorm) are left alone.
    """
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return module
