"""Unpaired MR -> CT synthesis with a CycleGAN (Wolterink et al. 2017, after Zhu et al. 2017).

Networks (names as in the paper): Syn_CT (MR -> CT) and Syn_MR (CT -> MR), ResNet generators;
Dis_CT and Dis_MR, 70x70 PatchGANs. One step, with ‖·‖₁ the mean absolute difference:

    G:  (Dis_CT(Syn_CT(I_MR)) - 1)² + (Dis_MR(Syn_MR(I_CT)) - 1)²                  (least squares)
        + λ (‖Syn_MR(Syn_CT(I_MR)) - I_MR‖₁ + ‖Syn_CT(Syn_MR(I_CT)) - I_CT‖₁)        (cycle)
        [+ λ_id λ (‖Syn_CT(I_CT) - I_CT‖₁ + ‖Syn_MR(I_MR) - I_MR‖₁)]               (identity, optional)
        [+ λ_s (‖MIND(I_MR) - MIND(Syn_CT(I_MR))‖₁ + ‖MIND(I_CT) - MIND(Syn_MR(I_CT))‖₁)]  (structure, optional)
        [+ λ_h (W1(Syn_CT(I_MR), I_CT) + W1(Syn_MR(I_CT), I_MR))]                  (histogram, optional)
    Dis_CT: (Dis_CT(I_CT) - 1)² + Dis_CT(fake CT)²,  Dis_MR likewise,

squares averaged over the PatchGAN's verdicts, the structure term (`counterfeit.losses_structure`)
averaged inside each input's body (dilated), the histogram term (`counterfeit.losses_histogram`)
the Wasserstein-1 distance between the intensities of each output and of a real image of the
target modality inside their bodies, fakes drawn from a history pool of 50, and every image the
discriminators see randomly cropped (`d_crop`). MR and CT slices are drawn independently, from
different subjects when both sets hold the same subjects (unpaired training). With `ema_decay` >
0, synthesis uses Syn_CT_ema, an exponential moving average of Syn_CT's weights (Yazıcı et al.
2019), which smooths the step-to-step wobble of a GAN generator. With 2.5D context (3 slices)
both generators map a slab of `context` slices to a slab of as many slices, so cycles and
identity compare like with like; synthesis keeps the middle output slice.

With `depth_channel` (the default), each image comes with its depth below the body surface
(`intensity.depth_map`) as one more channel: every generator and discriminator input is
(image, depth), a fake keeps its source image's depth (same geometry), and the histogram term is
taken band by band of depth (`DEPTH_BANDS_MM`, `losses_histogram.banded_intensity_w1`), which tells
bone at the scalp fat's depth from bone where a skull belongs (docs/mr2ct_ablation.md, rounds 23-29).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from counterfeit.errors import UserError
from counterfeit.losses import get_objective
from counterfeit.losses_histogram import banded_intensity_w1, intensity_w1
from counterfeit.losses_structure import mind_loss
from counterfeit.nets.patchgan import PatchDiscriminator
from counterfeit.train.image_pool import ImagePool
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
    split_depth,
    validate_common,
    with_depth,
)


def body_weight(image: torch.Tensor, margin: int = 2) -> torch.Tensor:
    """(B, 1, H, W) 1 inside the body of a normalised image (middle channel) grown by `margin` pixels, else 0.

    MR background is noise; its MIND descriptors are noise too, and asking a generator to copy
    them (or to turn CT's flat air into them) would only teach it to paint noise.
    """
    from counterfeit.medical.slicing import BODY_LEVEL

    mid = image[:, image.shape[1] // 2 : image.shape[1] // 2 + 1]
    body = (mid > BODY_LEVEL).to(image.dtype)
    return F.max_pool2d(body, 2 * margin + 1, stride=1, padding=margin)


def closed_body(image: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """(B, 1, H, W) bool: the body of a normalised image (middle channel), closed by a (2r+1)² square.

    On MR the skull is as dark as the background; the closing puts it back into the body (on the
    phantom, radius 3 leaves no body voxel out of the MR's and misses 1 % of the CT's, its sinuses).
    A hole fill would not do: random crops cut the skull ring open at their edges.
    """
    body = body_weight(image, margin=radius)  # dilation
    return -F.max_pool2d(-body, 2 * radius + 1, stride=1, padding=radius) > 0.5  # erosion


# Inner edges of the depth bands (mm below the body surface) of the banded histogram loss: skin, fat, skull, brain.
DEPTH_BANDS_MM = (3.0, 6.0, 9.0, 12.0, 20.0, 40.0)


def depth_bands(depth: torch.Tensor) -> torch.Tensor:
    """Band index (0 = shallowest) of each pixel of a depth channel (intensity.depth_map units); -1 outside the body."""
    from counterfeit.medical.intensity import DEPTH_SCALE_MM

    mm = (depth + 1.0) * (DEPTH_SCALE_MM / 2.0)
    bands = torch.bucketize(mm, torch.tensor(DEPTH_BANDS_MM, dtype=depth.dtype, device=depth.device))
    return torch.where(depth > -1.0, bands, torch.full_like(bands, -1))


# Indices of the per-sample discriminator crops drawn in sample_batch.
REAL_CT, FAKE_CT, REAL_MR, FAKE_MR = range(4)


@dataclass
class CycleGANConfig(MR2CTConfig):
    """CycleGAN options; the defaults are the "fast" preset (see PRESETS)."""

    # the paper's 10 held the fat-as-bone solution in place before the depth channel (docs/mr2ct_ablation.md); with
    # it, 5 is 4 % lower than 2 (round 45)
    lambda_cycle: float = 5.0
    lambda_identity: float = 0.0  # as a fraction of lambda_cycle (CycleGAN code uses 0.5); 0: off, as in the paper
    lambda_structure: float = 1.0  # MIND structure consistency of each generator's input and output (Yang et al. 2018)
    # W1 between each output's and a real target image's intensities inside the body; with the depth channel,
    # band by band of depth below the surface, which is what keeps fat from being painted as bone (round 28)
    lambda_histogram: float = 5.0
    pool_size: int = 50
    distinct_subjects: bool = True  # never pair an MR slice with a CT slice of the same subject
    ema_decay: float = 0.0  # > 0: synthesise with a moving average of Syn_CT's weights, updated after each step

    # Runs saved before an option existed trained without it: resume them that way.
    ABSENT_IN_OLD_RUNS: ClassVar[dict[str, Any]] = {**MR2CTConfig.ABSENT_IN_OLD_RUNS, "lambda_structure": 0.0,
                                                    "lambda_histogram": 0.0}


# Named configurations: "fast" is sized for runs of minutes on a CPU (the defaults, chosen by
# benchmarks/mr2ct_ablation.py, see docs/mr2ct_ablation.md); "wolterink2017" is the paper's:
# 256x256 slices, 9 residual blocks, 64 filters, λ = 10, no identity or structure loss.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    "wolterink2017": {"image_size": 256, "batch_size": 1, "context": 1, "generator": "resnet", "upsample": "transpose",
                      "ngf": 64, "n_blocks": 9, "ndf": 64, "d_layers": 3, "lambda_cycle": 10.0, "lambda_identity": 0.0,
                      "lambda_structure": 0.0, "lambda_histogram": 0.0, "pool_size": 50, "ema_decay": 0.0, "lr": 2e-4,
                      "beta1": 0.5, "depth_channel": False, "ct_scale": "linear"},
}


def validate_config(config: CycleGANConfig) -> int:
    """Raise a UserError naming the option for values the recipe cannot use; return the size multiple."""
    if min(config.lambda_cycle, config.lambda_identity, config.lambda_structure, config.lambda_histogram) < 0:
        raise UserError("--lambda-cycle, --lambda-identity, --lambda-structure and --lambda-histogram must be >= 0")
    if config.pool_size < 0:
        raise UserError(f"--pool-size must be >= 0, got {config.pool_size}")
    if not 0 <= config.ema_decay < 1:
        raise UserError(f"--ema-decay must be in [0, 1), got {config.ema_decay}")
    return validate_common(config)


@register_recipe
class CycleGANRecipe(MR2CTRecipe):
    """Syn_CT, Syn_MR, Dis_CT, Dis_MR trained with least-squares adversarial and cycle losses."""

    name = "cyclegan"
    Config = CycleGANConfig
    progress_keys = ("loss_g", "cycle", "loss_d_ct", "loss_d_mr")
    log_labels = {
        **MR2CTRecipe.log_labels,
        "adv_ct": "G adversarial: synthetic CT at Dis_CT",
        "adv_mr": "G adversarial: synthetic MR at Dis_MR",
        "cycle": "cycle L1, both ways (× λ_cycle)",
        "identity": "identity L1 (× λ_identity·λ_cycle)",
        "structure": "MIND structure (× λ_structure)",
        "histogram": "intensity W1 (× λ_histogram)",
        "loss_g": "generators' total loss",
        "loss_d_ct": "Dis_CT: real vs pooled fake CT",
        "loss_d_mr": "Dis_MR: real vs pooled fake MR",
    }
    paired_data = False

    def __init__(self, config: CycleGANConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.size_multiple = validate_config(config)
        self.d_crop = resolve_d_crop(config)
        c = config.context
        d = int(config.depth_channel)  # with a depth map, every network also sees it: D judges intensity at a depth

        def generator() -> torch.nn.Module:
            return build_generator(config, c + d, c)

        def discriminator() -> PatchDiscriminator:
            return PatchDiscriminator(c + d, ndf=config.ndf, n_layers=config.d_layers,
                                      norm=discriminator_norm(config))

        self.nets = {"Syn_CT": generator(), "Syn_MR": generator(), "Dis_CT": discriminator(), "Dis_MR": discriminator()}
        if config.ema_decay > 0:  # saved and restored with the other nets; never trained by an optimiser
            self.nets["Syn_CT_ema"] = copy.deepcopy(self.nets["Syn_CT"]).requires_grad_(False)
        for net in self.nets.values():
            net.to(device)
        n = self.nets
        opt_g, sched_g = adam_with_schedule(itertools.chain(n["Syn_CT"].parameters(), n["Syn_MR"].parameters()), config)
        opt_d, sched_d = adam_with_schedule(itertools.chain(n["Dis_CT"].parameters(), n["Dis_MR"].parameters()), config)
        self.optimizers = {"G": opt_g, "D": opt_d}
        self.schedulers = {"G": sched_g, "D": sched_d}
        # Least squares with targets 1/0 and no 1/2 factor: exactly the paper's losses.
        self.objective = get_objective("lsgan")
        self.pools = {"ct": ImagePool(config.pool_size), "mr": ImagePool(config.pool_size)}

    # --- data ---------------------------------------------------------------------------
    def make_sampler(self, data: MR2CTData) -> Any:
        from counterfeit.medical.slicing import BODY_LEVEL, UnpairedSliceSampler

        c = self.config
        return UnpairedSliceSampler(
            data.mr, data.ct, context=c.context, ct_context=c.context, crop=c.image_size, flip=c.flip,
            masks=data.masks, ct_masks=[v > BODY_LEVEL for v in data.ct], distinct_subjects=c.distinct_subjects,
            mr_aux=data.mr_depth, ct_aux=data.ct_depth,
        )

    def sample_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        mr, ct = self.sampler.sample(rng, c.batch_size)
        crops = draw_crop_offsets(rng, c.batch_size, 4, c.image_size, self.d_crop)
        return {"mr": mr, "ct": ct, "crops": crops}

    def synthesis_generator(self) -> torch.nn.Module:
        return self.nets.get("Syn_CT_ema", self.nets["Syn_CT"])

    @torch.no_grad()
    def update_ema(self) -> None:
        """Syn_CT_ema <- decay * Syn_CT_ema + (1 - decay) * Syn_CT (buffers copied)."""
        ema, net = self.nets["Syn_CT_ema"], self.nets["Syn_CT"]
        for p_ema, p in zip(ema.parameters(), net.parameters()):
            p_ema.lerp_(p, 1.0 - self.config.ema_decay)
        for b_ema, b in zip(ema.buffers(), net.buffers()):
            b_ema.copy_(b)

    # --- one step -------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        b = self.to_device(batch)
        c, obj, size = self.config, self.objective, self.d_crop
        # mr_in / ct_in: what the networks take (image, and its depth map with depth_channel); mr / ct: the images.
        # A fake keeps its source's depth map: the MR's geometry is the synthetic CT's.
        mr_in, ct_in, crops = b["mr"], b["ct"], b["crops"]
        mr, mr_depth = split_depth(mr_in, c.depth_channel)
        ct, ct_depth = split_depth(ct_in, c.depth_channel)
        syn_ct, syn_mr, dis_ct, dis_mr = (self.nets[k] for k in ("Syn_CT", "Syn_MR", "Dis_CT", "Dis_MR"))

        # Generators: every fake is computed once here and reused (detached) by the discriminators.
        set_requires_grad((dis_ct, dis_mr), False)
        fake_ct = syn_ct(mr_in)
        fake_mr = syn_mr(ct_in)
        fake_ct_in, fake_mr_in = with_depth(fake_ct, mr_depth), with_depth(fake_mr, ct_depth)
        rec_mr = syn_mr(fake_ct_in)
        rec_ct = syn_ct(fake_mr_in)
        adv_ct = obj.g_loss(dis_ct(crop_batch(fake_ct_in, crops[:, FAKE_CT], size)))
        adv_mr = obj.g_loss(dis_mr(crop_batch(fake_mr_in, crops[:, FAKE_MR], size)))
        cycle = c.lambda_cycle * (F.l1_loss(rec_mr, mr) + F.l1_loss(rec_ct, ct))
        loss_g = adv_ct + adv_mr + cycle
        out = {"adv_ct": adv_ct, "adv_mr": adv_mr, "cycle": cycle}
        if c.lambda_identity > 0:
            identity = c.lambda_identity * c.lambda_cycle * (F.l1_loss(syn_ct(ct_in), ct) + F.l1_loss(syn_mr(mr_in), mr))
            loss_g = loss_g + identity
            out["identity"] = identity
        if c.lambda_structure > 0:
            structure = c.lambda_structure * (mind_loss(mr, fake_ct, body_weight(mr)) + mind_loss(ct, fake_mr, body_weight(ct)))
            loss_g = loss_g + structure
            out["structure"] = structure
        if c.lambda_histogram > 0:
            if c.depth_channel:  # depth band by depth band
                b_mr, b_ct, n = depth_bands(mr_depth), depth_bands(ct_depth), len(DEPTH_BANDS_MM) + 1
                histogram = c.lambda_histogram * (banded_intensity_w1(fake_ct, b_mr, ct, b_ct, n)
                                                  + banded_intensity_w1(fake_mr, b_ct, mr, b_mr, n))
            else:
                body_mr, body_ct = closed_body(mr), closed_body(ct)
                histogram = c.lambda_histogram * (intensity_w1(fake_ct, body_mr, ct, body_ct)
                                                  + intensity_w1(fake_mr, body_ct, mr, body_mr))
            loss_g = loss_g + histogram
            out["histogram"] = histogram
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizers["G"].step()
        if "Syn_CT_ema" in self.nets:
            self.update_ema()
        set_requires_grad((dis_ct, dis_mr), True)

        # Discriminators: real images vs fakes from the history pools, all randomly cropped.
        pooled_ct = self.pools["ct"].query(fake_ct_in)
        pooled_mr = self.pools["mr"].query(fake_mr_in)
        loss_d_ct = obj.d_loss(dis_ct(crop_batch(ct_in, crops[:, REAL_CT], size)),
                               dis_ct(crop_batch(pooled_ct, crops[:, FAKE_CT], size)))
        loss_d_mr = obj.d_loss(dis_mr(crop_batch(mr_in, crops[:, REAL_MR], size)),
                               dis_mr(crop_batch(pooled_mr, crops[:, FAKE_MR], size)))
        self.optimizers["D"].zero_grad(set_to_none=True)
        (loss_d_ct + loss_d_mr).backward()
        self.optimizers["D"].step()

        out.update(loss_g=loss_g, loss_d_ct=loss_d_ct, loss_d_mr=loss_d_mr)
        return {k: v.detach() for k, v in out.items()}

    # --- state beyond networks and optimisers -----------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {f"pool_{k}": pool.state_dict() for k, pool in self.pools.items()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for k, pool in self.pools.items():
            if f"pool_{k}" in state:
                pool.load_state_dict(state[f"pool_{k}"], self.device)
