"""Benchmark: training and synthesis speed of the MR -> CT recipes on this CPU, against its matmul peak.

Run: python benchmarks/train_speed.py [--quick] [--threads 1] [--steps 3] [--synth-slices 128] [--no-compile]
Prints a table and writes benchmarks/results/train_speed.json (--quick: train_speed_quick.json).
Other processes on the machine slow every number down: the load average is recorded before and after.

What is measured
- matmul: fp32 2048 x 2048 matmuls, best of 5, at the start and again after the layer timings: the machine's
  practical GFLOP/s peak is the higher of the two (on a shared VM it drifts by 10-20 % within minutes, and a low
  reading would inflate every fraction below).
- steps/s of the real recipes (`CycleGANRecipe`, `PairedRecipe`, built from their presets) on
  synthetic in-memory batches (uniform noise through the recipes' own `sample_batch`): the
  paper configuration ("wolterink2017": ngf 64, 9 residual blocks, 70x70 PatchGAN, batch 1, 1
  channel) at 128² and 256², and the default "fast" configuration (128², ngf 16, 6 blocks, ndf 32, batch 1;
  its MIND structure loss adds a few small convolutions that the FLOP count below leaves out).
- achieved GFLOP/s = 2 x multiply-accumulates per step x steps/s, with MACs of the convolutions
  counted by `counterfeit.flops.conv_macs` (norms, activations, padding and the optimiser are not
  counted, so this is a lower bound on the work done).
- the fraction of step time the loop waits for data (`TrainResult.data_wait_fraction`) with a
  tiny phantom, prefetching (default) and inline, and the time of one `sample_batch`.
- whole-volume synthesis of a 256 x 256 x 128 MR volume with the paper-size generator
  (`synthesize_volume`, batches of 8 slices).
- one generator (paper size, 128²) forward in bf16 autocast vs fp32; forward + backward in
  channels_last vs the default layout; torch.compile vs eager (compile time reported too);
  and 1 vs 2 torch threads. With compile on, also the default CycleGAN step with its four networks compiled,
  against eager.

FLOP accounting of one step (G = one generator forward, D = one discriminator forward on a
`d_crop` crop; a convolution's backward costs one forward for the input gradient and one for
the weight gradient, so fwd + both grads = 3 forwards, fwd + one grad = 2):

CycleGAN (lambda_identity = 0, as in the paper):
    generator update: Syn_CT(mr), Syn_MR(ct), Syn_MR(fake_ct), Syn_CT(fake_mr)    4 G fwd
                      backward through all four (weight + input gradients)       8 G
                      Dis_CT(crop fake_ct), Dis_MR(crop fake_mr): D frozen, so    2 D fwd
                      backward computes input gradients only                     2 D
    discriminator update: Dis_CT(crop ct), Dis_CT(crop pooled fake_ct),          4 D fwd
                      Dis_MR(crop mr), Dis_MR(crop pooled fake_mr); the inputs
                      need no gradient, so backward = weight gradients only      4 D
    total = 12 G + 12 D        (with identity loss: + 2 G fwd + 4 G bwd = 18 G + 12 D)
Paired (pix2pix-style):
    generator update: G(mr) fwd + bwd 3 G; D(mr, fake) frozen: fwd + input grads 2 D
    discriminator update: D(mr, ct), D(mr, fake.detach()): fwd + weight grads    4 D
    total = 3 G + 6 D
The first convolution of a network whose input needs no gradient skips its input gradient;
that saving (< 1 % of these networks' MACs) is ignored.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from counterfeit.atomic import atomic_write_text
from counterfeit.flops import conv_macs

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "train_speed.json"
# (recipe, preset, image size) of the step benchmarks; "fast" uses the preset's own image size.
STEP_CONFIGS = [("cyclegan", "wolterink2017", 128), ("cyclegan", "wolterink2017", 256), ("cyclegan", "fast", None),
                ("paired", "wolterink2017", 128), ("paired", "wolterink2017", 256), ("paired", "fast", None)]
FORWARDS_PER_STEP = {"cyclegan": (12, 12), "paired": (3, 6)}  # (G, D) forward-equivalents, see the docstring


def best_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Shortest wall time of `repeats` calls after `warmup` untimed ones (the least disturbed by other work)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, repeats) / 1e9


# --- recipes on synthetic data ---------------------------------------------------------------

class NoiseSampler:
    """Stands in for the recipes' slice samplers: uniform noise slices of the right shapes."""

    def __init__(self, size: int, mr_channels: int, ct_channels: int) -> None:
        self.size, self.mr_channels, self.ct_channels = size, mr_channels, ct_channels

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (batch_size, self.size, self.size)
        mr = rng.uniform(-1, 1, (shape[0], self.mr_channels, *shape[1:])).astype(np.float32)
        ct = rng.uniform(-1, 1, (shape[0], self.ct_channels, *shape[1:])).astype(np.float32)
        return mr, ct


def build_recipe(name: str, preset: str, image_size: int | None, **overrides: Any) -> Any:
    from counterfeit.train.recipes.mr2ct_common import apply_preset

    if name == "cyclegan":
        from counterfeit.train.recipes.cyclegan import PRESETS, CycleGANConfig as Config, CycleGANRecipe as Recipe
    else:
        from counterfeit.train.recipes.paired import PRESETS, PairedConfig as Config, PairedRecipe as Recipe
    config = apply_preset(Config, PRESETS, preset, image_size=image_size, preview_subjects=0, **overrides)
    torch.manual_seed(0)
    return Recipe(config, torch.device("cpu"))


def step_macs(recipe: Any) -> dict[str, int]:
    """MACs of one forward of each network at the shapes a training step feeds it."""
    c = recipe.config
    b, s, crop = c.batch_size, c.image_size, recipe.d_crop
    g, d = (recipe.nets["Syn_CT"], recipe.nets["Dis_CT"]) if recipe.name == "cyclegan" else (recipe.nets["G"], recipe.nets["D"])
    return {"G": conv_macs(g, (b, g.in_channels, s, s)), "D": conv_macs(d, (b, d.in_channels, crop, crop))}


def step_flops(recipe: Any, macs: dict[str, int] | None = None) -> int:
    """Convolution FLOPs of one training step (the accounting in this module's docstring)."""
    macs = macs if macs is not None else step_macs(recipe)
    g_fwd, d_fwd = FORWARDS_PER_STEP[recipe.name]
    if recipe.name == "cyclegan" and recipe.config.lambda_identity > 0:
        g_fwd += 6  # Syn_CT(ct), Syn_MR(mr): forward + full backward
    return 2 * (g_fwd * macs["G"] + d_fwd * macs["D"])


def profile_step(recipe: Any, batch: Any) -> dict[str, Any]:
    """Where one training step's time goes: the ops with the most self time, and what no op accounts for."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        recipe.train_step(batch, 0)
        wall = time.perf_counter() - start
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    return {"wall_seconds": round(wall, 3), "op_seconds": round(total, 3),
            "top_ops_fraction_of_op_time": {e.key: round(e.self_cpu_time_total / 1e6 / total, 3) for e in ops[:8]}}


def bench_steps(name: str, preset: str, image_size: int | None, steps: int, peak: float,
                profile: bool = False, compile_nets: bool = False) -> dict[str, Any]:
    recipe = build_recipe(name, preset, image_size)
    if compile_nets:
        from counterfeit.train.compiled import compile_for_training

        compile_for_training(recipe.nets)
    c = recipe.config
    # batches shaped as the generators take them (slices plus the depth channel, when the config has one)
    if name == "cyclegan":
        mr_channels, ct_channels = recipe.nets["Syn_CT"].in_channels, recipe.nets["Syn_MR"].in_channels
    else:
        mr_channels, ct_channels = recipe.nets["G"].in_channels, 1
    recipe.sampler = NoiseSampler(c.image_size, mr_channels, ct_channels)
    recipe.train_mode(True)
    rng = np.random.default_rng(0)
    batches = [recipe.sample_batch(rng) for _ in range(steps + 1)]
    start = time.perf_counter()
    recipe.train_step(batches[0], 0)  # warm-up: allocator, oneDNN primitive caches (and the compile)
    first_step = time.perf_counter() - start
    start = time.perf_counter()
    for i, batch in enumerate(batches[1:], 1):
        recipe.train_step(batch, i)
    seconds = (time.perf_counter() - start) / steps
    macs = step_macs(recipe)
    profiled = profile_step(recipe, batches[-1]) if profile else None
    flops = step_flops(recipe, macs)
    return {
        "recipe": name, "preset": preset, "image_size": c.image_size, "batch_size": c.batch_size, "ngf": c.ngf,
        "n_blocks": c.n_blocks, "ndf": c.ndf, "d_crop": recipe.d_crop, "steps_timed": steps,
        "seconds_per_step": round(seconds, 3), "steps_per_second": round(1 / seconds, 3),
        "gmacs_generator_forward": round(macs["G"] / 1e9, 3), "gmacs_discriminator_forward": round(macs["D"] / 1e9, 3),
        "gflop_per_step": round(flops / 1e9, 1), "achieved_gflops": round(flops / seconds / 1e9, 1),
        "fraction_of_matmul_peak": round(flops / seconds / 1e9 / peak, 3),
        **({"profile": profiled} if profiled else {}),
        **({"compiled": True, "first_step_seconds_with_compile": round(first_step, 1)} if compile_nets else {}),
    }


def bench_layers(repeats: int = 10) -> list[dict[str, Any]]:
    """Forward + backward (input and weight gradients) of each convolution of the default CycleGAN's generator and
    discriminator alone, at the shapes a training step feeds it: which layers run far below the matmul rate.
    Layers computed as ThinOutputConv2d are timed as plain nn.Conv2d too."""
    import copy

    from counterfeit.nets.thin_conv import ThinOutputConv2d

    recipe = build_recipe("cyclegan", "fast", None)
    g, d = recipe.nets["Syn_CT"], recipe.nets["Dis_CT"]
    seen: list[tuple[str, torch.nn.Conv2d, tuple[int, ...], tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, net=net: seen.append((net, m, tuple(i[0].shape), tuple(o.shape))))
             for net, model in (("G", g), ("D", d)) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    size, crop = recipe.config.image_size, recipe.d_crop
    with torch.no_grad():
        g(torch.zeros(1, g.in_channels, size, size))
        d(torch.zeros(1, d.in_channels, crop, crop))
    for h in hooks:
        h.remove()

    def time_layer(layer: torch.nn.Module, in_shape: tuple[int, ...]) -> float:
        x = torch.randn(in_shape, requires_grad=True)

        def run() -> None:
            y = layer(x)
            y.backward(torch.ones_like(y))
        return best_time(run, repeats, warmup=2)

    rows = []
    for net, module, in_shape, out_shape in seen:
        flops = 3 * 2 * math.prod(out_shape) * module.in_channels * math.prod(module.kernel_size)
        layer = copy.deepcopy(module)
        seconds = time_layer(layer, in_shape)
        row = {"net": net, "layer": f"{module.in_channels}->{module.out_channels} k{module.kernel_size[0]} "
                                    f"s{module.stride[0]}", "input": list(in_shape),
               "kind": type(module).__name__, "ms": round(1e3 * seconds, 2),
               "gflops": round(flops / seconds / 1e9, 1)}
        if isinstance(module, ThinOutputConv2d):
            plain = torch.nn.Conv2d(module.in_channels, 1, module.kernel_size, padding=module.padding)
            plain.load_state_dict(module.state_dict())
            plain_seconds = time_layer(plain, in_shape)
            row |= {"ms_as_nn_conv2d": round(1e3 * plain_seconds, 2),
                    "gflops_as_nn_conv2d": round(flops / plain_seconds / 1e9, 1)}
        rows.append(row)
    return rows


# --- data loading through the real loop -----------------------------------------------------

def bench_data_wait(steps: int) -> dict[str, Any]:
    """The loop's data-wait fraction for the fast CycleGAN on a tiny phantom, with and without prefetching."""
    from counterfeit.data.phantom import generate_dataset
    from counterfeit.device import seed_everything
    from counterfeit.train.loop import LoopConfig, train

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_dataset(Path(tmp) / "phantom", 5, shape=(24, 128, 128), seed=0, workers=1)
        out["phantom_seconds"] = round(time.perf_counter() - start, 1)
        for prefetch in (2, 0):
            seed_everything(0)
            recipe = build_recipe("cyclegan", "fast", None, phantom=str(Path(tmp) / "phantom"))
            loop = LoopConfig(steps=steps, log_every=steps, sample_every=0, checkpoint_every=0, progress=False,
                              tensorboard=False, prefetch=prefetch)
            result = train(recipe, loop, Path(tmp) / f"run{prefetch}")
            out[f"data_wait_fraction_prefetch_{prefetch}"] = round(result.data_wait_fraction, 4)
            out[f"seconds_per_step_prefetch_{prefetch}"] = round(result.seconds / steps, 3)
        rng = np.random.default_rng(1)
        out["sample_batch_ms"] = round(1000 * best_time(lambda: recipe.sample_batch(rng), 20), 2)
    out["steps"] = steps
    return out


# --- synthesis and single-network options ---------------------------------------------------

def paper_generator() -> torch.nn.Module:
    from counterfeit.nets.resnet import ResnetGenerator

    torch.manual_seed(0)
    return ResnetGenerator(1, 1, ngf=64, n_blocks=9, norm="instance")


def bench_synthesis(slices: int) -> dict[str, Any]:
    from counterfeit.data.volumes import Volume
    from counterfeit.medical.synthesize import synthesize_volume

    gen = paper_generator()
    rng = np.random.default_rng(0)
    mr = Volume(rng.uniform(0, 1000, (slices, 256, 256)).astype(np.float32))
    synthesize_volume(gen, Volume(mr.array[:2]), batch_size=8)  # warm-up
    start = time.perf_counter()
    synthesize_volume(gen, mr, batch_size=8)
    seconds = time.perf_counter() - start
    return {"volume": [256, 256, 128], "slices_run": slices, "seconds_run": round(seconds, 1),
            "seconds_for_128_slices": round(seconds * 128 / slices, 1), "measured_all_slices": slices >= 128,
            "gmacs_per_slice": round(conv_macs(gen, (1, 1, 256, 256)) / 1e9, 2)}


def bench_options(size: int, compile_too: bool, threads: int) -> dict[str, Any]:
    gen = paper_generator()
    x = torch.randn(1, 1, size, size)
    out: dict[str, Any] = {"image_size": size, "network": "ResnetGenerator ngf 64, 9 blocks, instance norm"}

    def forward() -> None:
        with torch.no_grad():
            gen(x)

    def forward_bf16() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            gen(x)

    def train_step(net: torch.nn.Module, inp: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            net.zero_grad(set_to_none=True)
            net(inp).mean().backward()
        return run

    gen.eval()
    out["forward_fp32_s"] = round(best_time(forward, 3), 3)
    out["forward_bf16_autocast_s"] = round(best_time(forward_bf16, 3), 3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = gen(x).float()
    with torch.no_grad():
        out["bf16_max_abs_difference"] = round(float((bf16 - gen(x)).abs().max()), 4)
    gen.train()
    out["forward_backward_fp32_s"] = round(best_time(train_step(gen, x), 3), 3)
    last = paper_generator().to(memory_format=torch.channels_last)
    out["forward_backward_channels_last_s"] = round(
        best_time(train_step(last, x.contiguous(memory_format=torch.channels_last)), 3), 3)
    for n in sorted({1, 2, threads}):
        torch.set_num_threads(n)
        out[f"forward_backward_{n}_threads_s"] = round(best_time(train_step(gen, x), 2), 3)
    torch.set_num_threads(threads)
    if compile_too:
        from counterfeit.train.compiled import compile_for_training

        compiled = paper_generator()
        compile_for_training({"G": compiled})
        start = time.perf_counter()
        try:
            train_step(compiled, x)()
            out["compile_seconds"] = round(time.perf_counter() - start, 1)
            out["forward_backward_compiled_s"] = round(best_time(train_step(compiled, x), 3), 3)
        except Exception as err:  # no C++ compiler, unsupported platform...
            out["compile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return out


# --- report ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 timed step per config, 16 synthesis slices, no compile")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    parser.add_argument("--synth-slices", type=int, default=128, help="slices of the 256x256x128 volume to run")
    parser.add_argument("--loop-steps", type=int, default=30, help="steps of the data-wait runs")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.synth_slices, args.loop_steps, args.no_compile = 1, 16, 10, True
        if args.out == OUT:  # keep the full run's numbers (quoted in docs/performance.md)
            args.out = OUT.with_name("train_speed_quick.json")

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    peak = peak_start = matmul_gflops()
    print(f"fp32 matmul 2048²: {peak:.1f} GFLOP/s ({args.threads} thread(s), load average {load_before:.1f})")

    steps = []
    for name, preset, size in STEP_CONFIGS:
        row = bench_steps(name, preset, size, args.steps, peak, profile=preset == "fast")
        steps.append(row)
        # the fraction of the matmul peak is printed once the peak has been measured a second time (below)
        print(f"  {name:<8} {preset:<13} {row['image_size']:>3}²  {row['seconds_per_step']:>7.2f} s/step  "
              f"{row['achieved_gflops']:>6.1f} GFLOP/s")
    layers = bench_layers(repeats=3 if args.quick else 10)
    peak_after = matmul_gflops()
    peak = max(peak, peak_after)
    for row in steps:
        row["fraction_of_matmul_peak"] = round(row["achieved_gflops"] / peak, 3)
    for row in layers:
        row["fraction_of_matmul_peak"] = round(row["gflops"] / peak, 3)
        if "gflops_as_nn_conv2d" in row:
            row["fraction_of_matmul_peak_as_nn_conv2d"] = round(row["gflops_as_nn_conv2d"] / peak, 3)
    print(f"fp32 matmul 2048² again: {peak_after:.1f} GFLOP/s; the fractions below and in the JSON use {peak:.1f}")
    for row in steps:
        print(f"  {row['recipe']:<8} {row['preset']:<13} {row['image_size']:>3}²  "
              f"{100 * row['fraction_of_matmul_peak']:.0f} % of matmul")
    slowest = sorted(layers, key=lambda r: r["ms"], reverse=True)[:4]
    print("  slowest convolutions of the fast CycleGAN, fwd + bwd alone: " + "; ".join(
        f"{r['net']} {r['layer']} {r['ms']} ms ({100 * r['fraction_of_matmul_peak']:.0f} %)" for r in slowest))
    for r in layers:
        if "ms_as_nn_conv2d" in r:
            print(f"  {r['net']} {r['layer']} as ThinOutputConv2d {r['ms']} ms, as nn.Conv2d {r['ms_as_nn_conv2d']} ms")
    data = bench_data_wait(args.loop_steps)
    print(f"  data wait (fast CycleGAN, phantom): {100 * data['data_wait_fraction_prefetch_2']:.1f} % prefetching, "
          f"{100 * data['data_wait_fraction_prefetch_0']:.1f} % inline; sample_batch {data['sample_batch_ms']} ms")
    synth = bench_synthesis(args.synth_slices)
    print(f"  synthesis 256x256x128, paper generator: {synth['seconds_for_128_slices']:.0f} s "
          f"({'measured' if synth['measured_all_slices'] else f'from {args.synth_slices} slices'})")
    options = bench_options(128, not args.no_compile, args.threads)
    print(f"  generator 128² forward: fp32 {options['forward_fp32_s']} s, bf16 autocast "
          f"{options['forward_bf16_autocast_s']} s; fwd+bwd: default {options['forward_backward_fp32_s']} s, "
          f"channels_last {options['forward_backward_channels_last_s']} s")
    threads_text = ", ".join(f"{n} thread(s) {options[f'forward_backward_{n}_threads_s']} s"
                             for n in sorted({1, 2, args.threads}))
    print(f"  generator 128² fwd+bwd: {threads_text}")
    if "compile_seconds" in options:
        print(f"  torch.compile: {options['compile_seconds']} s to compile, "
              f"then {options['forward_backward_compiled_s']} s "
              f"per fwd+bwd (eager {options['forward_backward_fp32_s']} s)")
    elif "compile_error" in options:
        print(f"  torch.compile failed: {options['compile_error']}")
    compiled_step = None
    if "compile_seconds" in options:  # the default CycleGAN step with its four networks compiled
        compiled_step = bench_steps("cyclegan", "fast", None, max(args.steps, 10), peak, compile_nets=True)
        eager_step = bench_steps("cyclegan", "fast", None, max(args.steps, 10), peak)
        print(f"  default CycleGAN step: compiled {compiled_step['seconds_per_step']} s "
              f"(first step {compiled_step['first_step_seconds_with_compile']} s), "
              f"eager {eager_step['seconds_per_step']} s")
        compiled_step["eager_seconds_per_step"] = eager_step["seconds_per_step"]

    result = {
        "benchmark": "train_speed",
        "quick": args.quick,
        "threads": args.threads,
        "matmul_gflops": round(peak, 1),
        "matmul_gflops_start_and_after_layers": [round(peak_start, 1), round(peak_after, 1)],
        "steps": steps,
        "layers": layers,
        "data_loading": data,
        "synthesis": synth,
        "generator_options": options,
        "compiled_default_cyclegan_step": compiled_step,
        "flop_accounting": {"cyclegan": "12 G + 12 D forward-equivalents per step", "paired": "3 G + 6 D"},
        "seconds_total": round(time.perf_counter() - t0, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds_total']:.0f} s)")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
