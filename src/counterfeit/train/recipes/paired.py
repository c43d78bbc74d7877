"""Paired MR -> CT baseline: one generator trained with L1 + adversarial loss (pix2pix-style).

The baseline of Wolterink et al. 2017: the same kind of generator as the CycleGAN's Syn_CT,
trained on MR/CT slices from the same subject and position, which in real data are only
approximately aligned (the phantom's `ct.nii.gz` is deliberately misaligned too). The L1 term
pulls towards the misaligned target, which is what blurs paired results.

    G: (D(MR, G(MR)) - 1)² + λ_L1 ‖G(MR) - I_CT‖₁
    D: (D(MR, I_CT) - 1)² + D(MR, G(MR))²

D is a conditional PatchGAN seeing the MR stacked with a real or synthetic CT (as in pix2pix),
on random crops (`d_crop`); the least-squares objective and its scaling are the CycleGAN's, so
the two recipes differ only in data and in L1-to-target versus cycle consistency. λ_L1 = 100
as in pix2pix. No image pool (pix2pix uses none). `generator`: "resnet" (default, the
CycleGAN's) or "unet" (pix2pix's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from counterfeit.errors import UserError
from counterfeit.losses import get_objective
from counterfeit.nets.patchgan import PatchDiscriminator
from counterfeit.train.recipe import register_recipe
from counterfeit.train.recipes.mr2ct_common import (
    MR2CTConfig,
    MR2CTData,
    MR2CTRecipe,
    adam_with_schedule,
    build_generator,
    crop_batch,
    discriminator_norm,
    draw_crop_offsets,
    resolve_d_crop,
    set_requires_grad,
    validate_common,
)

REAL, FAKE = range(2)


@dataclass
class PairedConfig(MR2CTConfig):
    """Paired-baseline options; shared ones default as in the CycleGAN recipe."""

    lambda_l1: float = 100.0


PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    # The paper's paired baseline used its CycleGAN generator on 256x256 slices.
    "wolterink2017": {"image_size": 256, "batch_size": 1, "context": 1, "generator": "resnet", "upsample": "transpose",
                      "ngf": 64, "n_blocks": 9, "ndf": 64, "d_layers": 3, "lr": 2e-4, "beta1": 0.5, "depth_channel": False,
                      "ct_scale": "linear"},
}


def validate_config(config: PairedConfig) -> int:
    """Raise a UserError naming the option for unusable values; return the generator's size multiple."""
    if config.lambda_l1 < 0:
        raise UserError(f"--lambda-l1 must be >= 0, got {config.lambda_l1}")
    return validate_common(config)


@register_recipe
class PairedRecipe(MR2CTRecipe):
    """Generator G (MR -> CT) and conditional discriminator D on (MR, CT) pairs."""

    name = "paired"
    Config = PairedConfig
    progress_keys = ("loss_g", "l1", "loss_d")
    log_labels = {
        **MR2CTRecipe.log_labels,
        "adv": "G adversarial: (MR, synthetic CT) at D",
        "l1": "L1 to the CT (× λ_L1 in the total)",
        "loss_g": "generator's total loss",
        "loss_d": "D: real vs synthetic pairs",
    }
    paired_data = True

    def __init__(self, config: PairedConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.size_multiple = validate_config(config)
        c = config.context + int(config.depth_channel)  # input channels: MR slices (and the MR's depth map)
        generator = build_generator(config, c, 1)
        self.d_crop = resolve_d_crop(config)
        self.nets = {"G": generator, "D": PatchDiscriminator(c + 1, ndf=config.ndf, n_layers=config.d_layers,
                                                             norm=discriminator_norm(config))}
        for net in self.nets.values():
            net.to(device)
        opt_g, sched_g = adam_with_schedule(self.nets["G"].parameters(), config)
        opt_d, sched_d = adam_with_schedule(self.nets["D"].parameters(), config)
        self.optimizers = {"G": opt_g, "D": opt_d}
        self.schedulers = {"G": sched_g, "D": sched_d}
        self.objective = get_objective("lsgan")

    # --- data ---------------------------------------------------------------------------
    def make_sampler(self, data: MR2CTData) -> Any:
        from counterfeit.medical.slicing import PairedSliceSampler

        c = self.config
        return PairedSliceSampler(data.mr, data.ct, context=c.context, crop=c.image_size, flip=c.flip, masks=data.masks,
                                  mr_aux=data.mr_depth)

    def sample_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        mr, ct = self.sampler.sample(rng, c.batch_size)
        return {"mr": mr, "ct": ct, "crops": draw_crop_offsets(rng, c.batch_size, 2, c.image_size, self.d_crop)}

    def synthesis_generator(self) -> torch.nn.Module:
        return self.nets["G"]

    # --- one step -------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        b = self.to_device(batch)
        mr, ct, crops = b["mr"], b["ct"], b["crops"]
        gen, dis, obj, size = self.nets["G"], self.nets["D"], self.objective, self.d_crop

        set_requires_grad((dis,), False)
        fake = gen(mr)
        adv = obj.g_loss(dis(crop_batch(torch.cat([mr, fake], 1), crops[:, FAKE], size)))
        l1 = F.l1_loss(fake, ct)
        loss_g = adv + self.config.lambda_l1 * l1
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizers["G"].step()
        set_requires_grad((dis,), True)

        real_pair = crop_batch(torch.cat([mr, ct], 1), crops[:, REAL], size)
        fake_pair = crop_batch(torch.cat([mr, fake.detach()], 1), crops[:, FAKE], size)
        loss_d = obj.d_loss(dis(real_pair), dis(fake_pair))
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.optimizers["D"].step()
        return {k: v.detach() for k, v in {"loss_g": loss_g, "adv": adv, "l1": l1, "loss_d": loss_d}.items()}
