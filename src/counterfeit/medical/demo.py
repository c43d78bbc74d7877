"""The MR->CT demo: phantom -> unpaired and paired training -> synthesis -> evaluation -> report.

Both models get the same wall-clock budget on the same training subjects (the unpaired
CycleGAN draws MR and CT from different subjects; the paired baseline sees each subject's
MR with its slightly misaligned CT). Held-out subjects are synthesised from MR alone and
scored against the CT aligned to their MR, inside the body mask, with the SynthRAD2023
definitions. Two trivial baselines show what "learned something" means here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from counterfeit.errors import UserError
from counterfeit.train.budget import train_for_budget

MODELS = ("unpaired", "paired")
RECIPE_OF = {"unpaired": "cyclegan", "paired": "paired"}
SETUP_SECONDS = 12.0  # per training: reading the volumes and timing a few steps before the budget starts
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
    side_by_side: bool = True  # on a multi-core CPU, train both models at once (False: one after the other)
    # CycleGAN seeds started; the one with the lowest validation MAE after a quarter of its steps is finished
    # (2 kept 4 of 4 ablation runs out of the bad mode that 3 of 10 single runs fell into: docs/mr2ct_ablation.md)
    unpaired_candidates: int = 2


@dataclass
class DemoResult:
    report_md: Path
    report_html: Path
    summary: dict[str, Any]


def _log(cfg: DemoConfig, msg: str) -> None:
    if cfg.progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]demo[/] {msg}")


DEMO_SPLITS = (0.625, 0.125, 0.25)


def _training_seconds(cfg: DemoConfig, spent: float, n_test: int) -> float:
    """What the budget leaves for training after `spent` seconds and the reserve for setup, synthesis and report
    (their seconds measured generously at the default size, scaled by voxels); an error below 10 s."""
    scale = float(np.prod(cfg.shape)) / (48 * 128 * 128)
    reserve = SETUP_SECONDS + (20.0 + 6.0 * n_test) * scale
    left = cfg.minutes * 60 - spent - reserve
    if left < 10:
        raise UserError(f"--minutes {cfg.minutes:g} leaves no time to train: data, synthesis and report take about "
                        f"{(spent + reserve) / 60:.1f} min; give at least {(spent + reserve + 60) / 60:.1f} for a "
                        "minute of training")
    return left


def demo_phantom(cfg: DemoConfig) -> Path:
    """The demo's data: `cfg.phantom` as it is (never written to), or the phantom in `<out>/phantom`, generated (again)
    unless the one there was made with this config's subjects, shape and seed."""
    from counterfeit.data.phantom import load_dataset, phantom_in

    if cfg.phantom is not None:
        load_dataset(cfg.phantom)  # a clear error if it is not a phantom: the demo does not write into a user's folder
        return Path(cfg.phantom)
    return phantom_in(Path(cfg.out) / "phantom", cfg.subjects, shape=cfg.shape, seed=cfg.seed, splits=DEMO_SPLITS,
                      progress=cfg.progress, say=lambda message: _log(cfg, message))


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the whole demo into `cfg.out` and return the report paths and the numbers."""
    from counterfeit.data.phantom import load_dataset

    if cfg.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {cfg.minutes}")
    if cfg.unpaired_candidates < 1:
        raise UserError(f"--candidates must be >= 1, got {cfg.unpaired_candidates}")
    t_start = time.perf_counter()
    out = Path(cfg.out)
    if cfg.phantom is None:  # before generating anything: a budget too small even without the phantom's time
        from counterfeit.data.phantom import split_subjects

        _training_seconds(cfg, 0.0, len(split_subjects([""] * cfg.subjects, DEMO_SPLITS)["test"]))
    out.mkdir(parents=True, exist_ok=True)

    # 1. data
    root = demo_phantom(cfg)
    info = load_dataset(root)
    test_ids = info["splits"].get("test") or []
    if not test_ids:
        raise UserError(f"{root}/dataset.json: the demo needs at least one subject in the 'test' split")

    # 2. train both models for equal time on what the budget leaves: side by side on a multi-core CPU, each on its
    # share of the cores, else one after the other
    left = _training_seconds(cfg, time.perf_counter() - t_start, len(test_ids))
    threads = _side_by_side_threads(cfg)
    if threads:
        runs, train_info = _train_side_by_side(cfg, root, left, threads)
    else:
        runs, train_info = {}, {}
        for model in MODELS:
            runs[model], train_info[model] = _train(cfg, model, root, seconds=left / len(MODELS))

    # 3. synthesis of the held-out subjects + baselines, 4. evaluation
    rows, volumes, tissue_errors = _synthesize_and_evaluate(cfg, root, info, runs)

    # 5. report
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "phantom": str(root),
        "test_subjects": test_ids,
        "training": train_info,
        "threads_per_model": threads or None,  # None: trained one after the other
        "results": rows,
        "errors_by_tissue": tissue_errors,
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


def _side_by_side_threads(cfg: DemoConfig) -> int:
    """Torch threads per model when both can train at once on the CPU's cores; 0: train one after the other.

    Two one-thread runs side by side do about 1.3-1.5x the work of two-thread runs one after
    the other on this project's 2-core machine (small convolutions scale poorly across threads),
    so each model gets more steps for the same total time.
    """
    from counterfeit.device import resolve_device

    if not cfg.side_by_side or resolve_device(cfg.device).type != "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores // len(MODELS)


def _train_side_by_side(cfg: DemoConfig, root: Path, seconds: float, threads: int) -> tuple[dict, dict]:
    """Both models at once, each in its own process on `threads` threads, for `seconds` each."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    _log(cfg, f"training {' and '.join(MODELS)} side by side for {seconds / 60:.1f} min "
              f"({threads} thread{'s' if threads > 1 else ''} each)")
    runs = {m: Path(cfg.out) / m for m in MODELS}
    # spawn: fresh interpreters (safe after torch started its threads in this one)
    with ProcessPoolExecutor(len(MODELS), mp_context=get_context("spawn")) as pool:
        futures = {m: pool.submit(_train_worker, RECIPE_OF[m], _recipe_options(cfg, m, root), seconds, str(runs[m]),
                                  cfg.seed, threads, _candidates(cfg, m)) for m in MODELS}
        try:
            if cfg.progress:
                _show_progress(futures, runs, seconds)
            info = {m: f.result() for m, f in futures.items()}
        except SystemExit:
            # SIGTERM sent to this process alone (`docker stop`, `timeout`): the workers checkpoint and stop too,
            # instead of training out their budget while this one waits for them
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
            # a repeated SIGTERM changes nothing: interrupting the pool's shutdown (it waits for the workers'
            # checkpoints) would leave idle workers that the interpreter's exit then waits for forever
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise
    return runs, info


def _train_worker(recipe_name: str, options: dict[str, Any], seconds: float, run_dir: str, seed: int,
                  threads: int, candidates: int) -> dict[str, Any]:
    import SimpleITK as sitk
    import torch

    # Both caps matter: SimpleITK reads volumes on all cores by default, and a reader running while the
    # other model times its first steps slows that estimate (our likely reason for a demo whose unpaired
    # run planned ~15 % too few steps and stopped early).
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    signal.signal(signal.SIGTERM, _stop_worker)  # between training phases; training installs its own handler
    return train_for_budget(recipe_name, options, seconds, Path(run_dir), seed=seed, device="cpu", progress=False,
                            candidates=candidates, keep_best=True, overwrite=True)


def _stop_worker(signum: int, frame: Any) -> None:
    from counterfeit.train.loop import RunStopped

    raise RunStopped("a demo worker: terminated (SIGTERM) between training phases, with its last checkpoint",
                     128 + signum)


def _show_progress(futures: dict[str, Any], runs: dict[str, Path], seconds: float) -> None:
    """One wall-clock bar per model, with the last step its metrics.csv records, until both finish."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, transient=False) as bar:
        tasks = {m: bar.add_task(f"{m:>8}", total=seconds, status="starting") for m in futures}
        t0 = time.perf_counter()
        while not all(f.done() for f in futures.values()):
            for m, task in tasks.items():
                done = futures[m].done()
                status = "done" if done else _run_status(runs[m])
                bar.update(task, completed=seconds if done else min(time.perf_counter() - t0, seconds), status=status)
            time.sleep(0.5)
        for task in tasks.values():
            bar.update(task, completed=seconds, status="done")


def _run_status(run_dir: Path) -> str:
    """"step N", or "candidate K: step N" while a run's candidates train in `<run_dir>.candidateK`."""
    probes = sorted(run_dir.parent.glob(f"{run_dir.name}.candidate*"))
    if probes and not (run_dir / "metrics.csv").is_file():
        step = _last_logged_step(probes[-1] / "metrics.csv")
        return f"candidate {probes[-1].name.rsplit('candidate', 1)[1]}: step {step}"
    step = _last_logged_step(run_dir / "metrics.csv")
    return f"step {step}" if step else "loading data"


def _last_logged_step(csv_path: Path) -> int:
    try:
        last = csv_path.read_text().rstrip().rsplit("\n", 1)[-1]
        return int(float(last.split(",", 1)[0]))
    except (OSError, ValueError):
        return 0


def _recipe_options(cfg: DemoConfig, model: str, root: Path) -> dict[str, Any]:
    return {"phantom": str(root.resolve()), **cfg.overrides.get(model, {})}


def _train(cfg: DemoConfig, model: str, root: Path, seconds: float) -> tuple[Path, dict[str, Any]]:
    run_dir = Path(cfg.out) / model
    _log(cfg, f"training {model} ({RECIPE_OF[model]}) for {seconds / 60:.1f} min")
    return run_dir, train_for_budget(RECIPE_OF[model], _recipe_options(cfg, model, root), seconds, run_dir,
                                     seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                                     candidates=_candidates(cfg, model), keep_best=True, overwrite=True)


def _candidates(cfg: DemoConfig, model: str) -> int:
    # only the CycleGAN has a bad mode to avoid (the paired baseline gave 99.8 HU on two machines)
    return cfg.unpaired_candidates if model == "unpaired" else 1


def score_on_subjects(model: Any, root: Path, subject_ids: list[str], *,
                      write_dir: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Synthesise each phantom subject's MR with `model` (from `load_mr2ct_run`) and score it.

    Scores are the SynthRAD2023 metrics inside the body mask against the CT aligned to the MR,
    one row per subject (with the synthesis time). Returns the rows and the synthetic CTs (HU);
    with `write_dir`, each synthetic CT is also written there as `<subject>.nii.gz`.
    """
    from counterfeit.data.phantom import subject_paths
    from counterfeit.data.volumes import read_volume, write_volume
    from counterfeit.medical.evaluate import image_metrics
    from counterfeit.medical.synthesize import synthesize_volume

    rows, predictions = [], {}
    for sid in subject_ids:
        p = subject_paths(root, sid)
        mr = read_volume(p["mr"], modality="mr")
        t0 = time.perf_counter()
        sct = synthesize_volume(model, mr)
        seconds = time.perf_counter() - t0
        if write_dir is not None:
            write_volume(sct, Path(write_dir) / f"{sid}.nii.gz", dtype="float32")
        ct = read_volume(p["ct_aligned"], modality="ct").array
        mask = read_volume(p["mask"], modality="mask").array
        rows.append({"subject": sid, **image_metrics(ct, sct.array, mask), "seconds": seconds})
        predictions[sid] = sct.array
    return rows, predictions


def fit_baselines(root: Path, train_ids: list[str]) -> dict[str, Any]:
    """The trivial baselines, by report name: callables (mr, mask) -> synthetic CT in HU."""
    from counterfeit.data.phantom import subject_paths
    from counterfeit.data.volumes import read_volume
    from counterfeit.medical.baselines import all_soft_tissue_baseline, linear_regression_baseline

    tr = [subject_paths(root, s) for s in train_ids]
    linear = linear_regression_baseline([read_volume(p["mr"], modality="mr").array for p in tr],
                                        [read_volume(p["ct"], modality="ct").array for p in tr],
                                        [read_volume(p["mask"], modality="mask").array for p in tr])
    return {"linear MR→HU": linear, "all soft tissue": all_soft_tissue_baseline}


def _synthesize_and_evaluate(cfg: DemoConfig, root: Path, info: dict, runs: dict[str, Path]):
    from counterfeit.data.phantom import TISSUES, read_labels, subject_paths
    from counterfeit.data.volumes import read_volume
    from counterfeit.medical.evaluate import errors_by_label, image_metrics
    from counterfeit.medical.synthesize import load_mr2ct_run

    out = Path(cfg.out)
    test_ids = info["splits"]["test"]
    rows: dict[str, list[dict[str, Any]]] = {}
    predictions = {}
    for m in MODELS:
        _log(cfg, f"synthesising {len(test_ids)} test subjects with the {m} model")
        rows[m], predictions[m] = score_on_subjects(load_mr2ct_run(runs[m], cfg.device), root, test_ids,
                                                    write_dir=out / "synthetic" / m)
    _log(cfg, f"fitting the linear MR->HU baseline on {len(info['splits']['train'])} training subjects")
    baselines = fit_baselines(root, info["splits"]["train"])
    rows.update({name: [] for name in baselines})
    predictions.update({name: {} for name in baselines})
    volumes: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    for sid in test_ids:
        p = subject_paths(root, sid)
        mr = read_volume(p["mr"], modality="mr").array
        ct = read_volume(p["ct_aligned"], modality="ct").array
        mask = read_volume(p["mask"], modality="mask").array
        labels[sid] = read_labels(root, sid)
        for name, baseline in baselines.items():
            predictions[name][sid] = baseline(mr, mask)
            rows[name].append({"subject": sid, **image_metrics(ct, predictions[name][sid], mask), "seconds": 0.0})
        volumes[sid] = {"mr": mr, "ct": ct, "mask": mask, **{m: predictions[m][sid] for m in MODELS}}
        _log(cfg, f"{sid}: " + ", ".join(f"{m} MAE {next(r['mae'] for r in rows[m] if r['subject'] == sid):.1f} HU"
                                           for m in rows))
    # The phantom knows each voxel's tissue: which tissues each model gets wrong, pooled over the test subjects.
    tissue_errors = {name: errors_by_label(((volumes[sid]["ct"], predictions[name][sid], volumes[sid]["mask"],
                                             labels[sid]) for sid in test_ids), TISSUES) for name in rows}
    return rows, volumes, tissue_errors


def tissue_table_markdown(tissue_errors: dict[str, list[dict]]) -> str:
    """Markdown table: one row per tissue, one column per model with "MAE (bias)" in HU, and the pooled total."""
    models = list(tissue_errors)
    first = tissue_errors[models[0]]
    lines = ["| tissue | share of body | " + " | ".join(f"{m}: MAE (bias)" for m in models) + " |",
             "|---|---|" + "---|" * len(models)]
    for i, row in enumerate(first):
        cells = [f"{tissue_errors[m][i]['mae']:.0f} ({tissue_errors[m][i]['bias']:+.0f})" for m in models]
        lines.append(f"| {row['name']} | {100 * row['fraction']:.1f} % | " + " | ".join(cells) + " |")
    totals = [f"{sum(r['contribution'] for r in tissue_errors[m]):.1f}" for m in models]
    lines.append("| **all (voxel-weighted)** | 100 % | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def _write_report(cfg: DemoConfig, out: Path, summary: dict, rows: dict, volumes: dict, runs: dict) -> tuple[Path, Path]:
    from counterfeit.medical.evaluate import summarize
    from counterfeit.medical.report import (
        ReportFigure,
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
    slices = ReportFigure(_sample_figure(volumes, figures / "test_slices.png"),
                          "The axial slice with the most body of each of up to three test subjects: MR, both "
                          "synthetic CTs, the real CT, and each model's absolute error (windows in the column titles; "
                          "only the error inside the body mask is scored).")
    tr = summary["training"]
    bars = [ReportFigure(plot_per_patient([{k: r[k] for k in ("subject", "mae", "psnr", "ssim")} for r in rows[m]],
                                          figures / f"per_patient_{m}.png", title=f"{m} model ({tr[m]['recipe']})"),
                         f"The {m} model ({tr[m]['recipe']}) per test subject: MAE, PSNR and SSIM inside the body "
                         "mask; the dashed line is the mean.") for m in MODELS]
    losses = []
    for m in MODELS:
        if (runs[m] / "loss.png").is_file():
            dest = figures / f"loss_{m}.png"
            shutil.copyfile(runs[m] / "loss.png", dest)
            losses.append(ReportFigure(dest, f"Training curves of the {m} model ({tr[m]['recipe']}), against "
                                             "step: each logged loss and the validation MAE."))

    lines = [
        f"Built-in phantom: {len(summary['test_subjects'])} held-out heads of {cfg.shape[2]}×{cfg.shape[1]}×{cfg.shape[0]} voxels "
        f"(`{summary['phantom']}`). Both models trained on the same training subjects for the same wall-clock budget "
        f"on `{_device_used(cfg.device)}` ({_how_trained(summary['threads_per_model'])}): the unpaired CycleGAN drew MR and CT slices from different subjects; the paired baseline saw each "
        "subject's MR with its slightly misaligned CT. Metrics: SynthRAD2023 definitions inside the body mask "
        "(MAE in HU; PSNR over [−1024, 3000] HU with range 4024; SSIM). Mean ± SD uses the sample SD.",
        "",
        "| model | recipe | steps | s/step | minutes |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS:
        t = tr[m]
        lines.append(f"| {m} | {t['recipe']} | {t['steps']} | {t['s_per_step']:.2f} | {t['seconds'] / 60:.1f} |")
    for m in MODELS:
        if tr[m].get("candidates"):
            tried = ", ".join(f"seed {t['seed']}: {t['value']:.1f} HU" + (" (kept)" if t["kept"] else "")
                              for t in tr[m]["candidates"])
            lines += ["", f"The {m} model started {len(tr[m]['candidates'])} candidates and finished the one with the "
                          f"lowest validation MAE after {tr[m]['candidates'][0]['steps']} steps each: {tried}."]
    chosen = [f"{m}: step {tr[m]['best']['step']} of {tr[m]['steps']} ({tr[m]['best']['value']:.1f} HU)"
              for m in MODELS if tr[m].get("best")]
    if chosen:
        lines += ["", "Each model synthesises with its checkpoint of lowest validation MAE (on the val subjects' "
                      "aligned CTs, evaluated 8 times per run): " + "; ".join(chosen) + "."]
    table = comparison_table_markdown({m: rows[m] for m in MODELS})
    baselines = comparison_table_markdown(rows)
    means = {m: summarize(rows[m]) for m in rows}
    beat = ", ".join(f"{m}: {means[m]['mae']['mean']:.1f} HU" for m in rows)
    sections = [
        ReportSection("Setup", "\n".join(lines)),
        ReportSection("Results per test patient", table + "\n\nMean MAE — " + beat + ".", [slices]),
        ReportSection("Against trivial baselines", baselines, bars),
        ReportSection(
            "Where the error is: MAE by tissue",
            "The phantom's tissue labels split each model's error (HU, all test voxels pooled; bias = mean of "
            "synthetic − real CT, + means too bright):\n\n" + tissue_table_markdown(summary["errors_by_tissue"]),
        ),
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


def _how_trained(threads: int | None) -> str:
    if not threads:
        return "one after the other"
    return f"side by side, {threads} CPU thread{'s' if threads > 1 else ''} each"


def _device_used(option: str) -> str:
    """What `--device` resolved to (`auto` -> cpu or cuda)."""
    from counterfeit.device import resolve_device

    return str(resolve_device(option))


def _sample_figure(volumes: dict[str, dict[str, np.ndarray]], out_png: Path) -> Path:
    """The axial slice with the most body of up to three test subjects: MR | unpaired | paired | CT | |error| maps,
    with each column's display window in its title."""
    from matplotlib.figure import Figure

    from counterfeit.atomic import atomic_path

    subjects = list(volumes)[:3]
    cols = ["MR (auto window)", "sCT unpaired", "sCT paired", "CT", "|error| unpaired", "|error| paired"]
    windows = ["", *["\n−1000 … 1500 HU"] * 3, *["\n0 … 500 HU"] * 2]
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
                ax.set_title(cols[c] + windows[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{sid} z={z}", fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out_png
