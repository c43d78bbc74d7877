"""History of generated images for the discriminator (Shrivastava et al. 2017, used by CycleGAN).

Showing the discriminator a mix of current and earlier fakes keeps it from forgetting what the
generator used to produce, which damps oscillation. The rule of the CycleGAN code: while the
pool is not full, store each new image and return it; once full, with probability 1/2 return a
stored image and put the new one in its place, otherwise return the new image.

Random draws come from the torch global RNG, which the training loop saves and restores with
checkpoints; the pool's contents go into the checkpoint through `state_dict`, so a resumed run
sees exactly the fakes an uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """A buffer of up to `size` generated images (size 0: a pass-through)."""

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"image pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images for the discriminator, one per input image (batch on axis 0); inputs are detached."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand(())) < 0.5:
                index = int(torch.randint(0, self.size, ()))
                out.append(self.images[index])
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Contents as tensors on the CPU (loadable with torch.load(weights_only=True))."""
        stored = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stored}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"image pool of size {self.size} cannot load a pool of size {state['size']}")
        stored = state["images"]
        self.images = [img.to(device) for img in stored] if stored.numel() else []
