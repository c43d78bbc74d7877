"""The MR->CT demo: phantom -> unpaired and paired training -> synthesis -> evaluation -> report.

Both models get the same wall-clock budget on the same training subjects (the unpaired
CycleGAN draws MR and CT from different subjects; the paired baseline sees each subject's
MR with its slightly misaligned CT). Held-out subjects are synthesised from MR alone and
scored against the CT aligned to their MR, inside the body mask, with the SynthRAD2023
definitions. Two trivial baselines show what "learned something" means here.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from counterfeit.errors import UserError

MODELS = ("unpaired", "paired")
RECIPE_OF = {"unpaired": "cyclegan", "paired": "paired"}
# The seed talk's brain results (Wolterink et al. 2017, 6 real patients): shown for the layout, not comparable.
PAPER_MEANS = {"unpaired": {"mae": "73.7 ± 2.3", "psnr": "32.3 ± 0.7"}, "paired": {"mae": "89.4 ± 6.8", "psnr": "30.6 ± 0.9"}}


@dataclass
class DemoConfig:
    out: Path
    minutes: float = 10.0  # total wall clock, phantom and report included
    subjects: int = 24  # 15 train / 3 val / 6 test, as many test patients as the paper
    shape: tuple[int, int, int] = (48, 128, 128)  # (z, y, x) voxels per phantom head
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    phantom: Path | None = None  # reuse an existing phantom dataset instead of generating one
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-model recipe options


@dataclass
class DemoResult:
    report_md: Path
    report_html: Path
    summary: dict[str, Any]


def _log(cfg: DemoConfig, msg: str) -> None:
    if cfg.progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]demo[/] {msg}")


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the whole demo into `cfg.out` and return the report paths and the numbers."""
    from counterfeit.data.phantom import generate_dataset, load_dataset

    if cfg.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {cfg.minutes}")
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. data
    root = Path(cfg.phantom) if cfg.phantom else out / "phantom"
    if not (root / "dataset.json").is_file():
        _log(cfg, f"generating {cfg.subjects} phantom heads {cfg.shape} into {root}")
        generate_dataset(root, cfg.subjects, shape=cfg.shape, seed=cfg.seed, splits=(0.625, 0.125, 0.25),
                         progress=cfg.progress)
    info = load_dataset(root)
    test_ids = info["splits"].get("test") or []
    if not test_ids:
        raise UserError(f"{root}/dataset.json: the demo needs at least one subject in the 'test' split")

    # 2. train both models, each on half of what the budget leaves after data, synthesis and report
    reserve = 20.0 + 6.0 * len(test_ids)  # seconds: synthesis + evaluation + figures, measured generously
    left = cfg.minutes * 60 - (time.perf_counter() - t_start) - reserve
    if left < 20:
        raise UserError(f"--minutes {cfg.minutes} leaves no time to train (need about {(reserve + 60) / 60:.1f} min)")
    runs = {}
    train_info = {}
    for model in MODELS:
        runs[model], train_info[model] = _train(cfg, model, root, seconds=left / len(MODELS))

    # 3. synthesis of the held-out subjects + baselines, 4. evaluation
    rows, volumes = _synthesize_and_evaluate(cfg, root, info, runs)

    # 5. report
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "phantom": str(root),
        "test_subjects": test_ids,
        "training": train_info,
        "results": rows,
        "seconds_total": time.perf_counter() - t_start,
    }
    md, html = _write_report(cfg, out, summary, rows, volumes, runs)
    summary["seconds_total"] = time.perf_counter() - t_start
    from counterfeit.atomic import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    _log(cfg, f"done in {summary['seconds_total'] / 60:.1f} min: {html}")
    return DemoResult(md, html, summary)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x).__name__)


def _train(cfg: DemoConfig, model: str, root: Path, seconds: float) -> tuple[Path, dict[str, Any]]:
    """Train one model for `seconds`; the learning rate decays linearly over the second half of the budget."""
    from counterfeit.device import resolve_device, seed_everything
    from counterfeit.train.loop import LoopConfig, train
    from counterfeit.train.recipe import recipe_class

    device = resolve_device(cfg.device)
    cls = recipe_class(RECIPE_OF[model])
    options = {"phantom": str(root.resolve()), **cfg.overrides.get(model, {})}
    steps = _estimate_steps(cls, options, device, seconds)
    options.update(lr_decay_start=steps // 2, lr_decay_end=steps)
    seed_everything(cfg.seed)
    recipe = cls(cls.Config(**options), device)
    run_dir = Path(cfg.out) / model
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo run starts fresh; use `train --resume` to continue a run
    _log(cfg, f"training {model} ({cls.name}) for {seconds / 60:.1f} min (about {steps} steps)")
    loop = LoopConfig(steps=steps, minutes=seconds / 60, seed=cfg.seed, log_every=10,
                      sample_every=max(steps // 5, 1), checkpoint_every=max(steps // 4, 1), progress=cfg.progress)
    result = train(recipe, loop, run_dir)
    return run_dir, {"recipe": cls.name, "steps": result.steps_done, "planned_steps": steps,
                     "seconds": result.seconds, "s_per_step": result.seconds / max(result.steps_done, 1),
                     "stopped_early": result.stopped_early, "data_wait_fraction": result.data_wait_fraction,
                     "config": asdict(recipe.config)}


def _estimate_steps(cls: type, options: dict[str, Any], device: Any, seconds: float) -> int:
    """Time a few steps of a throw-away copy, so the LR schedule can end when the budget does."""
    import torch

    from counterfeit.train.loop import step_rng

    recipe = cls(cls.Config(**options), device)
    recipe.setup_data()
    recipe.train_mode(True)
    recipe.train_step(recipe.sample_batch(step_rng(0, 0)), 0)  # warm-up (allocations, first-call costs)
    t0 = time.perf_counter()
    n = 3
    for i in range(1, n + 1):
        recipe.train_step(recipe.sample_batch(step_rng(0, i)), i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / n
    # The loop also logs, draws samples and checkpoints: keep ~5 % of the budget for that.
    return max(10, int(0.95 * seconds / per_step))


def _synthesize_and_evaluate(cfg: DemoConfig, root: Path, info: dict, runs: dict[str, Path]):
    from counterfeit.data.phantom import subject_paths
    from counterfeit.data.volumes import read_volume, write_volume
    from counterfeit.medical.baselines import all_soft_tissue_baseline, linear_regression_baseline
    from counterfeit.medical.evaluate import image_metrics
    from counterfeit.medical.synthesize import load_mr2ct_run, synthesize_volume

    out = Path(cfg.out)
    train_ids = info["splits"]["train"]
    _log(cfg, f"fitting the linear MR->HU baseline on {len(train_ids)} training subjects")
    tr = [subject_paths(root, s) for s in train_ids]
    linear = linear_regression_baseline([read_volume(p["mr"], modality="mr").array for p in tr],
                                        [read_volume(p["ct"], modality="ct").array for p in tr],
                                        [read_volume(p["mask"], modality="mask").array for p in tr])
    models = {m: load_mr2ct_run(runs[m], cfg.device) for m in MODELS}
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in (*MODELS, "linear MR→HU", "all soft tissue")}
    volumes: dict[str, dict[str, np.ndarray]] = {}
    for sid in info["splits"]["test"]:
        p = subject_paths(root, sid)
        mr = read_volume(p["mr"], modality="mr")
        ct = read_volume(p["ct_aligned"], modality="ct").array
        mask = read_volume(p["mask"], modality="mask").array
        preds = {}
        for m in MODELS:
            t0 = time.perf_counter()
            sct = synthesize_volume(models[m], mr)
            seconds = time.perf_counter() - t0
            write_volume(sct, out / "synthetic" / m / f"{sid}.nii.gz", dtype="float32")
            preds[m] = (sct.array, seconds)
        preds["linear MR→HU"] = (linear(mr.array, mask), 0.0)
        preds["all soft tissue"] = (all_soft_tissue_baseline(mr.array, mask), 0.0)
        for name, (array, seconds) in preds.items():
            rows[name].append({"subject": sid, **image_metrics(ct, array, mask), "seconds": seconds})
        volumes[sid] = {"mr": mr.array, "ct": ct, "mask": mask, **{m: preds[m][0] for m in MODELS}}
        _log(cfg, f"{sid}: " + ", ".join(f"{m} MAE {rows[m][-1]['mae']:.1f} HU" for m in rows))
    return rows, volumes


def _write_report(cfg: DemoConfig, out: Path, summary: dict, rows: dict, volumes: dict, runs: dict) -> tuple[Path, Path]:
    from counterfeit.medical.evaluate import summarize
    from counterfeit.medical.report import (
        ReportSection,
        comparison_table_markdown,
        plot_per_patient,
        write_metrics_table,
        write_report,
    )

    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for name, model_rows in rows.items():
        write_metrics_table(model_rows, out / "metrics", stem=name.replace(" ", "_").replace("→", "_to_"))
    sample_png = _sample_figure(volumes, figures / "test_slices.png")
    bars = {m: plot_per_patient([{k: r[k] for k in ("subject", "mae", "psnr", "ssim")} for r in rows[m]],
                                figures / f"per_patient_{m}.png") for m in MODELS}
    losses = []
    for m in MODELS:
        if (runs[m] / "loss.png").is_file():
            dest = figures / f"loss_{m}.png"
            shutil.copyfile(runs[m] / "loss.png", dest)
            losses.append(dest)

    tr = summary["training"]
    lines = [
        f"Built-in phantom: {len(summary['test_subjects'])} held-out heads of {cfg.shape[2]}×{cfg.shape[1]}×{cfg.shape[0]} voxels "
        f"(`{summary['phantom']}`). Both models trained on the same training subjects for the same wall-clock budget "
        f"on `{cfg.device}`: the unpaired CycleGAN drew MR and CT slices from different subjects; the paired baseline saw each "
        "subject's MR with its slightly misaligned CT. Metrics: SynthRAD2023 definitions inside the body mask "
        "(MAE in HU; PSNR over [−1024, 3000] HU with range 4024; SSIM). Mean ± SD uses the sample SD.",
        "",
        "| model | recipe | steps | s/step | minutes |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS:
        t = tr[m]
        lines.append(f"| {m} | {t['recipe']} | {t['steps']} | {t['s_per_step']:.2f} | {t['seconds'] / 60:.1f} |")
    table = comparison_table_markdown({m: rows[m] for m in MODELS})
    baselines = comparison_table_markdown(rows)
    means = {m: summarize(rows[m]) for m in rows}
    beat = ", ".join(f"{m}: {means[m]['mae']['mean']:.1f} HU" for m in rows)
    sections = [
        ReportSection("Setup", "\n".join(lines)),
        ReportSection("Results (the seed's table layout)", table + "\n\nMean MAE — " + beat + ".", [sample_png]),
        ReportSection("Against trivial baselines", baselines, list(bars.values())),
        ReportSection("Training curves", "Loss curves of each run (`metrics.csv` in each run directory).", losses),
        ReportSection(
            "For reference: the paper's numbers",
            "Wolterink et al. 2017 on 6 real brain patients (not comparable with the phantom): "
            f"unpaired MAE {PAPER_MEANS['unpaired']['mae']} HU, PSNR {PAPER_MEANS['unpaired']['psnr']} dB; "
            f"paired MAE {PAPER_MEANS['paired']['mae']} HU, PSNR {PAPER_MEANS['paired']['psnr']} dB "
            "(their PSNR uses peak 4095; `counterfeit evaluate --psnr-peak seed` computes that variant).",
        ),
    ]
    return write_report(out, title="counterfeit demo: MR → CT synthesis on the built-in phantom", sections=sections)


def _sample_figure(volumes: dict[str, dict[str, np.ndarray]], out_png: Path) -> Path:
    """Middle axial slice of up to three test subjects: MR | unpaired | paired | CT | |error| maps."""
    from matplotlib.figure import Figure

    from counterfeit.atomic import atomic_path

    subjects = list(volumes)[:3]
    cols = ["MR", "sCT unpaired", "sCT paired", "CT", "|error| unpaired", "|error| paired"]
    fig = Figure(figsize=(2.3 * len(cols), 2.4 * len(subjects)))
    axes = fig.subplots(len(subjects), len(cols), squeeze=False)
    for r, sid in enumerate(subjects):
        v = volumes[sid]
        z = int(np.argmax(v["mask"].reshape(v["mask"].shape[0], -1).sum(1)))  # the slice with most body
        panels = [(v["mr"][z], "gray", None), (v["unpaired"][z], "gray", (-1000, 1500)),
                  (v["paired"][z], "gray", (-1000, 1500)), (v["ct"][z], "gray", (-1000, 1500)),
                  (np.abs(v["unpaired"][z] - v["ct"][z]), "magma", (0, 500)),
                  (np.abs(v["paired"][z] - v["ct"][z]), "magma", (0, 500))]
        for c, (img, cmap, lim) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, vmin=lim[0] if lim else None, vmax=lim[1] if lim else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{sid} z={z}", fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out_png
