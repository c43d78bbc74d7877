"""Recipe "crn": Cascaded Refinement Network (Chen & Koltun 2017), semantic layout -> image.

Trains `CascadedRefinementNetwork` with the perceptual loss on a frozen VGG19 and, for k > 1,
the hindsight diversity loss (per class, the best of the k outputs; see
`counterfeit.losses_perceptual`). Adam, lr 1e-4, batch 1, as in the released code.

Data (`dataset`):
- "street": procedural toy street scenes (`counterfeit.data.street_scenes`), photographic path;
- "phantom-ct" / "phantom-mr": tissue label maps of the head phantom -> CT (HU) / MR slices,
  rendered in memory at (phantom_depth, height, width), or read from `phantom_dir` (a
  `counterfeit phantom` dataset, train/val splits);
- "folder": `layouts/*.png` + `images/*.png` with the same stems (label ids, or colours with
  a palette).

Optional adversarial term (`adv_weight` > 0, off by default as in the paper, which reports
GAN training of this model unsuccessful): a layout-conditioned PatchGAN discriminator scores
(layout, image) pairs with an objective from `counterfeit.losses`.

Cost: the VGG19 forward/backward on B*(k+1) images dominates. Measured on a shared 2-core
CPU: 64x64 with k = 1 about 0.4 s per step, 32x64 with k = 3 about 0.4 s, 64x128 with k = 3
about 3.5 s (loaded machine); 256x512 costs ~16x more than 64x128.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from counterfeit.data.layouts import LayoutPairs, Palette, default_palette, one_hot, parse_palette
from counterfeit.errors import UserError
from counterfeit.losses_perceptual import PAPER_LAYER_WEIGHTS, PAPER_PIXEL_WEIGHT, PerceptualLoss, diversity_loss
from counterfeit.nets.crn import CascadedRefinementNetwork, cascade_sizes, default_widths
from counterfeit.nets.vgg import CONV_INDEX, PAPER_LAYERS
from counterfeit.train.recipe import Recipe, register_recipe

DATASETS = ("street", "phantom-ct", "phantom-mr", "folder")
# Objectives with one discriminator step per generator step (WGAN-GP's 5 critic steps are not wired here).
ADV_OBJECTIVES = ("lsgan", "nonsaturating", "hinge", "minimax")
VAL_LIMIT = 32  # validation examples used by metrics()
SAMPLE_ROWS = 4


@dataclass
class CRNConfig:
    dataset: str = "street"
    layouts: str | None = None  # folder: layouts directory
    images: str | None = None  # folder: images directory
    palette: list | None = None  # folder: [[name, r, g, b], ...] (the CLI reads it from --palette FILE.json)
    num_classes: int = 0  # folder: number of classes (0: from the palette)
    channels: int = 0  # folder: image channels, 1 or 3 (the CLI reads it from the first image)
    height: int = 64
    width: int = 128
    base_height: int = 4  # the first module's height (4x8 in the paper for 2:1 images)
    widths: tuple = ()  # feature width per module; () = nets.crn.default_widths
    k: int = 3  # images per layout (the paper: 9); 1 = the plain perceptual loss
    pixel_weight: float = PAPER_PIXEL_WEIGHT
    vgg_layers: tuple = PAPER_LAYERS  # VGG19 activations compared by the perceptual loss
    layer_weights: tuple = PAPER_LAYER_WEIGHTS  # one per vgg_layers
    vgg_weights: str | None = None  # torchvision vgg19 state dict (.pth) or .safetensors copy
    vgg_pool: str = "avg"  # "avg" as in the released code, "max" as torchvision
    lr: float = 1e-4
    batch_size: int = 1
    flip: bool = True  # random horizontal flips
    adv_weight: float = 0.0
    gan_objective: str = "lsgan"
    d_lr: float = 1e-4
    data_seed: int = 0
    n_train: int = 400  # street: training scenes
    n_val: int = 16  # street: validation scenes; folder: held-out pairs (at most a fifth)
    phantom_subjects: int = 6  # phantom: training subjects (rendered in memory)
    phantom_val_subjects: int = 1
    phantom_depth: int = 32
    phantom_dir: str | None = None  # phantom: read a `counterfeit phantom` dataset instead (train / val splits)


def complete_folder_config(config: CRNConfig) -> CRNConfig:
    """Fill a folder config's `num_classes` and `channels` from its palette and data, so the run records them."""
    from counterfeit.data.layouts import paired_stems, read_image, read_layout

    if config.dataset != "folder":
        return config
    if not config.layouts or not config.images:
        raise UserError("dataset 'folder' needs --layouts DIR and --images DIR")
    layouts, images = Path(config.layouts), Path(config.images)
    stems = paired_stems(layouts, images)
    changes: dict[str, Any] = {}
    if config.channels == 0:
        changes["channels"] = int(read_image(images / f"{stems[0]}.png").shape[0])
    if config.num_classes == 0:
        if config.palette:
            changes["num_classes"] = len(parse_palette(config.palette))
        else:  # label-id layouts: as many classes as the largest id needs
            changes["num_classes"] = 1 + max(int(read_layout(layouts / f"{s}.png").max()) for s in stems)
    return dataclasses.replace(config, **changes)


@register_recipe
class CRNRecipe(Recipe):
    name = "crn"
    Config = CRNConfig
    progress_keys = ("loss",)
    log_labels = {
        "loss": "G's total loss",
        "perceptual": "diversity (best-of-k perceptual) loss",
        "l1_best": "L1 of the best of k outputs",
        "loss_d": "D: real vs generated",
        "loss_adv": "G adversarial (× adv_weight in the total)",
        "val_l1": "validation L1 of the first output",
        "val_l1_best_of_k": "validation L1 of the best of k",
        "val_mae_hu": "validation MAE in the mask (HU)",
    }

    def __init__(self, config: CRNConfig, device: torch.device) -> None:
        super().__init__(config, device)
        c = config
        if c.dataset not in DATASETS:
            raise UserError(f"crn: dataset must be one of {DATASETS}, got {c.dataset!r}")
        if c.k < 1 or c.batch_size < 1:
            raise UserError(f"crn: k and batch size must be >= 1, got k={c.k}, batch size={c.batch_size}")
        if not (0 < c.lr < float("inf") and 0 < c.d_lr < float("inf")):  # also refuses NaN
            raise UserError(f"crn: learning rates must be finite numbers > 0, got --lr {c.lr} (D: {c.d_lr})")
        if c.adv_weight < 0 or (c.adv_weight > 0 and c.gan_objective not in ADV_OBJECTIVES):
            raise UserError(f"crn: adversarial weight must be >= 0 and the objective one of {ADV_OBJECTIVES}")
        self.sizes = cascade_sizes(c.height, c.width, c.base_height)
        widths = tuple(c.widths) or default_widths(self.sizes)
        if not c.vgg_layers or any(n not in CONV_INDEX for n in c.vgg_layers):
            raise UserError(f"crn: VGG layers must be among {list(CONV_INDEX)}, got {list(c.vgg_layers)}")
        if len(c.layer_weights) != len(c.vgg_layers):
            raise UserError(f"crn: {len(c.layer_weights)} layer weights for {len(c.vgg_layers)} VGG layers {list(c.vgg_layers)}")
        if len(widths) != len(self.sizes):
            raise UserError(f"crn: {len(widths)} widths for {len(self.sizes)} refinement modules "
                            f"({' -> '.join(f'{h}x{w}' for h, w in self.sizes)})")
        self.palette, self.channels = self._classes_and_channels()
        self.num_classes = len(self.palette)
        G = CascadedRefinementNetwork(self.num_classes, self.channels, c.k, widths, c.height, c.width).to(device)
        self.nets = {"G": G}
        self.optimizers = {"G": torch.optim.Adam(G.parameters(), lr=c.lr)}
        if c.adv_weight > 0:
            from counterfeit.losses import get_objective
            from counterfeit.nets.patchgan import PatchDiscriminator

            n_layers = max(1, min(3, int(math.log2(min(c.height, c.width))) - 3))
            D = PatchDiscriminator(self.num_classes + self.channels, ndf=64, n_layers=n_layers).to(device)
            self.nets["D"] = D
            self.optimizers["D"] = torch.optim.Adam(D.parameters(), lr=c.d_lr, betas=(0.5, 0.999))
            self.objective = get_objective(c.gan_objective)
        self._perceptual: PerceptualLoss | None = None
        self.train_pairs: LayoutPairs | None = None
        self.val_pairs: LayoutPairs | None = None

    # --- classes, data ---------------------------------------------------------
    def _classes_and_channels(self) -> tuple[Palette, int]:
        c = self.config
        if c.dataset == "street":
            from counterfeit.data.street_scenes import STREET_PALETTE

            return STREET_PALETTE, 3
        if c.dataset.startswith("phantom"):
            from counterfeit.data.phantom_layouts import PHANTOM_PALETTE

            return PHANTOM_PALETTE, 1
        if c.channels not in (1, 3):
            raise UserError(f"crn: folder images must have 1 or 3 channels, config says {c.channels}")
        if c.palette:
            palette = parse_palette(c.palette)
            if c.num_classes not in (0, len(palette)):
                raise UserError(f"crn: --num-classes {c.num_classes} disagrees with the palette's {len(palette)} classes")
            return palette, c.channels
        if c.num_classes < 1:
            raise UserError("crn: folder data with label-id layouts needs --num-classes (or a --palette)")
        return default_palette(c.num_classes), c.channels

    @property
    def modality(self) -> str | None:
        return {"phantom-ct": "ct", "phantom-mr": "mr"}.get(self.config.dataset)

    def setup_data(self) -> None:
        c = self.config
        if c.dataset == "street":
            from counterfeit.data.street_scenes import make_street_scenes

            self.train_pairs = make_street_scenes(c.n_train, c.height, c.width, seed=c.data_seed)
            # A different seed stream for validation: no scene is shared with training.
            self.val_pairs = make_street_scenes(c.n_val, c.height, c.width, seed=c.data_seed + 10_000)
        elif c.dataset.startswith("phantom"):
            from counterfeit.data.phantom_layouts import phantom_dir_pairs, phantom_layout_pairs

            if c.phantom_dir:
                size = (c.height, c.width)
                self.train_pairs = phantom_dir_pairs(c.phantom_dir, self.modality, "train", size=size)
                self.val_pairs = phantom_dir_pairs(c.phantom_dir, self.modality, "val", size=size)
            else:
                n, nv = c.phantom_subjects, c.phantom_val_subjects
                kw = dict(height=c.height, width=c.width, depth=c.phantom_depth, seed=c.data_seed)
                self.train_pairs = phantom_layout_pairs(self.modality, range(n), **kw)
                self.val_pairs = phantom_layout_pairs(self.modality, range(n, n + nv), **kw) if nv > 0 else self.train_pairs
        else:
            from counterfeit.data.layouts import load_paired_folder

            pairs = load_paired_folder(c.layouts, c.images, palette=parse_palette(c.palette) if c.palette else None,
                                       num_classes=self.num_classes, size=(c.height, c.width))
            if pairs.images.shape[1] != self.channels:
                raise UserError(f"{c.images}: images have {pairs.images.shape[1]} channel(s), the run expects {self.channels}")
            n_val = min(c.n_val, len(pairs) // 5)
            self.train_pairs = pairs.subset(range(len(pairs) - n_val))
            self.val_pairs = pairs.subset(range(len(pairs) - n_val, len(pairs))) if n_val else self.train_pairs
        if len(self.train_pairs) == 0:
            raise UserError(f"crn: the {c.dataset} data set has no training examples")
        _ = self.perceptual  # build the VGG now: a missing weights file (or the random-VGG warning) shows before training

    def sample_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pairs = self.train_pairs
        idx = rng.integers(0, len(pairs), self.config.batch_size)
        labels, images = pairs.labels[idx].astype(np.int64), pairs.images[idx]
        if self.config.flip:
            flip = rng.random(len(idx)) < 0.5
            labels = np.where(flip[:, None, None], labels[..., ::-1], labels)
            images = np.where(flip[:, None, None, None], images[..., ::-1], images)
        return {"labels": np.ascontiguousarray(labels), "images": np.ascontiguousarray(images, dtype=np.float32)}

    # --- training ----------------------------------------------------------------
    @property
    def perceptual(self) -> PerceptualLoss:
        """Built on first use: inference (load_run) never needs the VGG weights file."""
        if self._perceptual is None:
            from counterfeit.nets.vgg import build_vgg19

            vgg = build_vgg19(self.config.vgg_weights, self.config.vgg_layers, pool=self.config.vgg_pool, device=self.device)
            self._perceptual = PerceptualLoss(vgg, self.config.layer_weights, self.config.pixel_weight)
        return self._perceptual

    def _layout(self, labels: torch.Tensor) -> torch.Tensor:
        return one_hot(labels, self.num_classes).to(self.device)

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, float | torch.Tensor]:
        batch = self.to_device(batch)
        layout, target = self._layout(batch["labels"]), batch["images"]
        G = self.nets["G"]
        outputs = G(layout)  # (B, k, C, H, W)
        loss_p = diversity_loss(outputs, target, layout, self.perceptual)
        loss, logs = loss_p, {}
        if self.config.adv_weight > 0:
            D, k = self.nets["D"], self.config.k
            fake = torch.cat([layout.repeat_interleave(k, 0), outputs.flatten(0, 1)], dim=1)
            real = torch.cat([layout, target], dim=1)
            opt_d = self.optimizers["D"]
            opt_d.zero_grad(set_to_none=True)
            loss_d = self.objective.d_loss(D(real), D(fake.detach()))
            loss_d.backward()
            opt_d.step()
            loss_adv = self.objective.g_loss(D(fake))
            loss = loss + self.config.adv_weight * loss_adv
            logs = {"loss_d": loss_d.detach(), "loss_adv": loss_adv.detach()}
        opt = self.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            l1 = (outputs.detach() - target[:, None]).abs().flatten(2).mean(2)  # (B, k)
        return {"loss": loss.detach(), "perceptual": loss_p.detach(), "l1_best": l1.min(1).values.mean(), **logs}

    # --- inference / evaluation ---------------------------------------------------
    @torch.no_grad()
    def generate(self, labels: np.ndarray, batch: int = 8) -> np.ndarray:
        """k images (B, k, C, H, W) in [-1, 1] for (B, H, W) label maps at the trained size."""
        G = self.nets["G"]
        was_training = G.training
        G.eval()
        out = []
        for i in range(0, len(labels), batch):
            lab = torch.from_numpy(np.asarray(labels[i : i + batch], dtype=np.int64))
            out.append(G(self._layout(lab)).float().cpu().numpy())
        G.train(was_training)
        return np.concatenate(out)

    def read_layout(self, path: str | Path) -> np.ndarray:
        """A layout PNG (colours of this run's palette, or label ids) as (height, width) ids at the trained size."""
        from counterfeit.data.layouts import read_layout, resize_labels

        palette = self.palette if (self.config.dataset != "folder" or self.config.palette) else None
        labels = read_layout(path, palette, self.num_classes)
        height, width = self.config.height, self.config.width
        if labels.shape[0] * width != labels.shape[1] * height:  # a different aspect ratio is distorted, not cropped
            import warnings

            warnings.warn(f"{path}: layout of {labels.shape[1]}x{labels.shape[0]} pixels stretched to the trained "
                          f"{width}x{height} (another aspect ratio)", stacklevel=2)
        return resize_labels(labels, (height, width))

    def evaluate(self, pairs: LayoutPairs) -> dict[str, float]:
        """L1 (in [-1, 1] units) of the first output and of the best of k; MAE in HU inside the mask for CT."""
        outputs = self.generate(pairs.labels)
        err = np.abs(outputs - pairs.images[:, None])  # (N, k, C, H, W)
        result = {"val_l1": float(err[:, 0].mean()), "val_l1_best_of_k": float(err.mean(axis=(2, 3, 4)).min(1).mean())}
        if self.modality == "ct" and pairs.masks is not None:
            from counterfeit.medical.intensity import unit_to_ct

            hu = np.abs(unit_to_ct(outputs[:, 0, 0]) - unit_to_ct(pairs.images[:, 0]))
            result["val_mae_hu"] = float(hu[pairs.masks].mean())
        return result

    def metrics(self, step: int) -> dict[str, float]:
        if self.val_pairs is None:
            return {}
        return self.evaluate(self.val_pairs.subset(range(min(VAL_LIMIT, len(self.val_pairs)))))

    def write_samples(self, step: int, out_dir: Path) -> None:
        if self.val_pairs is None:
            return
        from counterfeit.layout_synthesis import layout_row, save_montage

        pairs = self.val_pairs.subset(range(min(SAMPLE_ROWS, len(self.val_pairs))))
        outputs = self.generate(pairs.labels)
        rows = [layout_row(labels, self.palette, [target, *outs]) for labels, target, outs in zip(pairs.labels, pairs.images, outputs)]
        save_montage(rows, Path(out_dir) / f"step_{step:08d}.png")
