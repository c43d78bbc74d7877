"""The README's Python examples run as written (on a tiny trained run and phantom head in place of real data)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from counterfeit.data.phantom import generate_dataset, subject_paths
from counterfeit.train.loop import LoopConfig, train
from counterfeit.train.recipes.cyclegan import CycleGANConfig, CycleGANRecipe

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 2


def test_mr_to_ct_example(tmp_path, monkeypatch, capsys):
    block = next(b for b in _python_blocks() if "synthesize_volume" in b)
    phantom = generate_dataset(tmp_path / "phantom", 3, shape=(8, 24, 24), seed=1, workers=1)
    config = CycleGANConfig(phantom=str(phantom), image_size=24, ngf=4, n_blocks=1, ndf=4, d_crop=24, preview_subjects=0)
    torch.manual_seed(0)
    train(CycleGANRecipe(config, torch.device("cpu")),
          LoopConfig(steps=2, checkpoint_every=0, sample_every=0, progress=False, tensorboard=False),
          tmp_path / "runs" / "cyclegan")
    head = subject_paths(phantom, "sub-000")
    for name, source in (("mr", "mr"), ("ct", "ct_aligned"), ("mask", "mask")):
        shutil.copy(head[source], tmp_path / f"{name}.nii.gz")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'mae'" in printed and "'ssim'" in printed and (tmp_path / "sct.nii.gz").is_file()


def test_objectives_example(capsys):
    block = next(b for b in _python_blocks() if "get_objective" in b)
    exec(compile(block, "README.md", "exec"), {})
    assert "tensor(" in capsys.readouterr().out
