"""MR->CT evaluation: SynthRAD2023 metrics, summaries, tables and reports."""

from __future__ import annotations

import base64
import csv
import json
import math
import re

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from counterfeit.errors import UserError
from counterfeit.medical.evaluate import errors_by_label, image_metrics, summarize
from counterfeit.medical.report import (
    ReportFigure,
    ReportSection,
    comparison_table_markdown,
    plot_per_patient,
    write_metrics_table,
    write_report,
)

SHAPE = (9, 16, 16)


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish CT in [-1000, 1500] HU and a box mask well inside the volume."""
    rng = np.random.default_rng(seed)
    ct = rng.uniform(-1000, 1500, SHAPE)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:7, 3:13, 4:12] = 1
    return ct, mask


def _synthrad_ssim(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """SSIM written out step by step from the SynthRAD2023 reference definition."""
    lo, hi = -1024.0, 3000.0
    gt, pred = np.clip(gt, lo, hi), np.clip(pred, lo, hi)
    m = np.where(mask > 0, 1.0, 0.0)
    gt, pred = np.where(m == 0, lo, gt) - lo, np.where(m == 0, lo, pred) - lo
    _, ssim_map = structural_similarity(gt, pred, data_range=hi - lo, full=True)
    return float(crop(ssim_map, 3)[crop(m, 3).astype(bool)].mean(dtype=np.float64))


def test_constant_offset_inside_mask():
    ct, mask = _volume()
    sct = ct + 50.0 * mask - 300.0 * (1 - mask)  # errors outside the mask must not count
    m = image_metrics(ct, sct, mask)
    assert m["mae"] == pytest.approx(50.0)
    assert m["psnr"] == pytest.approx(10 * math.log10(4024.0**2 / 2500.0))
    seed = image_metrics(ct, sct, mask, psnr_peak="seed")
    assert seed["psnr"] == pytest.approx(20 * math.log10(4095.0 / 50.0))
    assert seed["mae"] == m["mae"] and seed["ssim"] == m["ssim"]
    assert 0.0 < m["ssim"] < 1.0


def test_errors_by_label_splits_the_mae_by_tissue():
    ct, mask = _volume()
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[:, :8] = 1  # top half of every slice: label 1, bottom: label 2
    labels[:, 8:] = 2
    labels[0] = 9  # outside the mask (mask rows 2..6): must not appear
    sct = ct + np.where(labels == 1, 30.0, -100.0)
    sct2 = ct + np.where(labels == 1, -10.0, 0.0)
    rows = errors_by_label([(ct, sct, mask, labels), (ct, sct2, mask, labels)], {1: "bone"})
    assert [r["label"] for r in rows] == [1, 2] and [r["name"] for r in rows] == ["bone", "2"]
    n1 = int(((labels == 1) & (mask > 0)).sum())
    n2 = int(((labels == 2) & (mask > 0)).sum())
    assert [r["voxels"] for r in rows] == [2 * n1, 2 * n2]  # pooled over both cases
    assert rows[0]["mae"] == pytest.approx(20.0) and rows[0]["bias"] == pytest.approx(10.0)
    assert rows[1]["mae"] == pytest.approx(50.0) and rows[1]["bias"] == pytest.approx(-50.0)
    assert sum(r["fraction"] for r in rows) == pytest.approx(1.0)
    # the contributions add up to the MAE of all masked voxels of both cases
    pooled = (image_metrics(ct, sct, mask)["mae"] + image_metrics(ct, sct2, mask)["mae"]) / 2  # equal voxel counts
    assert sum(r["contribution"] for r in rows) == pytest.approx(pooled)
    with pytest.raises(UserError, match="label map shape"):
        errors_by_label([(ct, sct, mask, labels[:, :4])])
    # per-voxel errors need no SSIM window: a 2D strip of 3 voxels is fine
    row = errors_by_label([(np.zeros((1, 3)), np.array([[10.0, -20.0, 0.0]]), np.ones((1, 3)), np.array([[1, 1, 2]]))])
    assert [(r["label"], r["mae"], r["bias"]) for r in row] == [(1, 15.0, -5.0), (2, 0.0, 0.0)]


def test_identical_volumes():
    ct, mask = _volume(1)
    sct = ct.copy()
    sct[mask == 0] += 777.0  # outside the mask: ignored by every metric
    m = image_metrics(ct, sct, mask)
    assert m["mae"] == 0.0
    assert m["psnr"] == float("inf")
    assert m["ssim"] == pytest.approx(1.0)


def test_clipping_applies_to_psnr_and_ssim_not_mae():
    ct, mask = _volume(2)
    inside = mask > 0
    ct[inside] = 3500.0  # above the 3000 HU clip
    sct = ct.copy()
    sct[inside] = 3100.0
    m = image_metrics(ct, sct, mask)
    assert m["mae"] == pytest.approx(400.0)  # MAE is never clipped
    assert m["psnr"] == float("inf")  # both clip to 3000 HU
    assert m["ssim"] == pytest.approx(1.0)
    seed = image_metrics(ct, sct, mask, psnr_peak="seed")
    assert seed["psnr"] == pytest.approx(20 * math.log10(4095.0 / 400.0))


def test_psnr_and_ssim_match_skimage_reference():
    ct, mask = _volume(3)
    rng = np.random.default_rng(4)
    sct = ct + rng.normal(0, 120, SHAPE)
    sct[0, 0, :4] = -3000.0  # a clipped voxel (outside the mask here)
    sct[4, 6, 6] = 5000.0  # a clipped voxel inside the mask
    m = image_metrics(ct, sct, mask)
    inside = mask > 0
    expected_psnr = peak_signal_noise_ratio(
        np.clip(ct, -1024, 3000)[inside], np.clip(sct, -1024, 3000)[inside], data_range=4024
    )
    assert m["psnr"] == pytest.approx(expected_psnr, rel=1e-12)
    assert m["ssim"] == pytest.approx(_synthrad_ssim(ct, sct, mask), rel=1e-12)
    assert m["mae"] == pytest.approx(np.abs(ct - sct)[inside].mean(), rel=1e-12)


def test_input_errors():
    ct, mask = _volume()
    with pytest.raises(UserError, match=r"\(9, 16, 16\).*\(9, 16, 15\)"):
        image_metrics(ct, ct[..., :15], mask)
    with pytest.raises(UserError, match="mask is empty"):
        image_metrics(ct, ct, np.zeros_like(mask))
    bad = ct.copy()
    bad[3, 5, 5] = np.nan
    with pytest.raises(UserError, match="NaN or infinite"):
        image_metrics(ct, bad, mask)
    bad[3, 5, 5] = ct[3, 5, 5]
    bad[0, 0, 0] = np.nan  # outside the mask: allowed
    assert math.isfinite(image_metrics(ct, bad, mask)["ssim"])
    with pytest.raises(UserError, match="psnr_peak"):
        image_metrics(ct, ct, mask, psnr_peak="max")
    with pytest.raises(UserError, match="at least 7 voxels"):
        image_metrics(ct[:5], ct[:5], mask[:5])


def test_summarize_uses_sample_sd():
    rows = [{"subject": f"s{i}", "mae": v, "psnr": 30 + i} for i, v in enumerate([70.0, 80.0, 75.5, 91.2])]
    s = summarize(rows)
    assert s["n"] == 4 and "ssim" not in s
    maes = np.array([r["mae"] for r in rows])
    assert s["mae"]["mean"] == pytest.approx(maes.mean())
    assert s["mae"]["sd"] == pytest.approx(maes.std(ddof=1))
    assert math.isnan(summarize(rows[:1])["mae"]["sd"])


SEED_TABLE = {  # the talk's brain results (MAE, PSNR) per patient
    "unpaired": [(70.3, 31.1), (76.2, 32.1), (75.5, 32.9), (75.2, 32.9), (72.0, 32.3), (73.0, 32.5)],
    "paired": [(86.2, 29.3), (98.8, 30.1), (96.9, 30.1), (86.0, 31.7), (81.7, 31.2), (87.0, 30.9)],
}


def test_comparison_table_reproduces_seed_summary_row():
    results = {
        model: [{"subject": str(i + 1), "mae": mae, "psnr": psnr} for i, (mae, psnr) in enumerate(values)]
        for model, values in SEED_TABLE.items()
    }
    lines = comparison_table_markdown(results).strip().splitlines()
    assert lines[0] == "| patient | MAE unpaired | MAE paired | PSNR unpaired | PSNR paired |"
    assert lines[2] == "| 1 | 70.3 | 86.2 | 31.1 | 29.3 |"
    assert len(lines) == 2 + 6 + 1
    assert lines[-1] == "| mean ± SD | 73.7 ± 2.3 | 89.4 ± 6.8 | 32.3 ± 0.7 | 30.6 ± 0.9 |"


def test_comparison_table_with_ssim_and_missing_patient():
    rows_a = [
        {"subject": "a", "mae": 1.0, "psnr": 2.0, "ssim": 0.5},
        {"subject": "b", "mae": 3.0, "psnr": 4.0, "ssim": 0.7},
    ]
    rows_b = rows_a[:1]
    table = comparison_table_markdown({"cyclegan": rows_a, "baseline: linear MR→HU": rows_b})
    assert "| SSIM cyclegan | SSIM baseline: linear MR→HU |" in table
    assert "| b | 3.0 | — |" in table


def _rows():
    return [
        {"subject": "sub-001", "mae": 80.0, "psnr": 27.5, "ssim": 0.81},
        {"subject": "sub-002", "mae": 90.0, "psnr": 26.0, "ssim": 0.79},
        {"subject": "sub-003", "mae": 70.0, "psnr": float("inf"), "ssim": 0.85},
    ]


def test_write_metrics_table(tmp_path):
    rows = _rows()
    paths = write_metrics_table(rows, tmp_path / "eval")
    md = paths["md"].read_text().strip().splitlines()
    assert md[-1].startswith("| mean ± SD | 80.0 ± 10.0 | inf ± ")
    assert "0.817 ± 0.031" in md[-1]
    assert len(md) == 2 + 3 + 1
    with open(paths["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert [r["subject"] for r in table] == ["sub-001", "sub-002", "sub-003", "mean", "sd"]
    assert float(table[3]["mae"]) == pytest.approx(80.0)
    assert float(table[4]["ssim"]) == pytest.approx(np.std([0.81, 0.79, 0.85], ddof=1))
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["n"] == 3
    assert float(data["rows"][2]["psnr"]) == float("inf")


def test_plot_and_report(tmp_path):
    rows = _rows()
    png = plot_per_patient(rows, tmp_path / "fig" / "metrics.png")
    raw = png.read_bytes()
    assert raw.startswith(b"\x89PNG")
    md_path, html_path = write_report(
        tmp_path / "report",
        title="Phantom MR→CT",
        sections=[
            ReportSection("Results", comparison_table_markdown({"cyclegan": rows}) + "\nSome **bold** text.",
                          [ReportFigure(png, "Per subject: MAE & co.")]),
            ReportSection("Notes", "- one\n- two <script>"),
        ],
    )
    md = md_path.read_text()
    assert "## Results" in md and "| mean ± SD |" in md and "![Per subject: MAE & co.](../fig/metrics.png)" in md
    page = html_path.read_text()
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == raw
    assert '<tr class="summary"><td>mean ± SD</td>' in page
    assert "<th>MAE cyclegan</th>" in page and "<strong>bold</strong>" in page
    assert "<li>two &lt;script&gt;</li>" in page
    assert "<figcaption>Per subject: MAE &amp; co. <span class=file>(metrics.png)</span></figcaption>" in page


# --- folders and CLI -------------------------------------------------------------------------


def _write_study(root, subjects=("sub-001", "sub-002"), extra=("sub-009",)):
    """Flat prediction folder + phantom-style subject folders holding ct_aligned and mask."""
    from counterfeit.data.volumes import Volume, write_volume

    expected = {}
    for i, subject in enumerate(subjects + extra):
        ct, mask = _volume(10 + i)
        ct = ct.astype(np.float32)
        write_volume(Volume(ct, spacing=(1.0, 1.0, 2.0)), root / "phantom" / subject / "ct_aligned.nii.gz")
        write_volume(Volume(mask, spacing=(1.0, 1.0, 2.0)), root / "phantom" / subject / "mask.nii.gz")
        if subject in subjects:
            sct = (ct + 20.0 * (i + 1)).astype(np.float32)
            write_volume(Volume(sct, spacing=(1.0, 1.0, 2.0)), root / "pred" / f"{subject}.nii.gz")
            expected[subject] = image_metrics(ct, sct, mask)
    return expected


def test_evaluate_folders_phantom_layout(tmp_path):
    from counterfeit.medical.evaluate import evaluate_folders

    expected = _write_study(tmp_path)
    phantom = tmp_path / "phantom"
    rows = evaluate_folders(
        tmp_path / "pred", phantom, phantom, ref_name="ct_aligned.nii.gz", mask_name="mask.nii.gz"
    )
    assert [r["subject"] for r in rows] == ["sub-001", "sub-002"]  # the extra reference case is ignored
    for row in rows:
        for key in ("mae", "psnr", "ssim"):
            assert row[key] == pytest.approx(expected[row["subject"]][key], rel=1e-9)
    assert rows[1]["mae"] == pytest.approx(40.0, rel=1e-5)


def test_evaluate_folders_errors(tmp_path):
    from counterfeit.data.volumes import Volume, write_volume
    from counterfeit.errors import InputFileError
    from counterfeit.medical.evaluate import evaluate_folders

    _write_study(tmp_path)
    phantom = tmp_path / "phantom"
    write_volume(Volume(np.full(SHAPE, -1000.0, np.float32)), tmp_path / "pred" / "sub-404.nii.gz")
    with pytest.raises(UserError, match="no reference CT for predicted subject.*sub-404"):
        evaluate_folders(tmp_path / "pred", phantom, phantom, ref_name="ct_aligned.nii.gz", mask_name="mask.nii.gz")
    (tmp_path / "pred" / "sub-404.nii.gz").unlink()
    narrow = Volume(np.full((9, 16, 12), -1000.0, np.float32), spacing=(1.0, 1.0, 2.0))
    write_volume(narrow, tmp_path / "pred" / "sub-002.nii.gz")
    with pytest.raises(InputFileError, match=r"sub-002\.nii\.gz: shape 9x16x12 differs"):
        evaluate_folders(tmp_path / "pred", phantom, phantom, ref_name="ct_aligned.nii.gz", mask_name="mask.nii.gz")
    with pytest.raises(InputFileError, match="no subject folders containing ct.nii.gz"):
        evaluate_folders(tmp_path / "pred", phantom, phantom, ref_name="ct.nii.gz", mask_name="mask.nii.gz")


def test_cli_evaluate(tmp_path):
    from typer.testing import CliRunner

    from counterfeit.cli import app

    _write_study(tmp_path)
    phantom = str(tmp_path / "phantom")
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", phantom, "--mask", phantom]
    args += ["--ref-name", "ct_aligned.nii.gz", "--mask-name", "mask.nii.gz"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    assert "sub-002" in result.output and "mean ± SD" in result.output
    out = tmp_path / "evaluation"
    assert {p.name for p in out.iterdir()} == {"metrics.csv", "metrics.json", "metrics.md", "metrics.png"}
    assert "| mean ± SD | 30.0 ± 14.1 |" in (out / "metrics.md").read_text()

    bad = CliRunner().invoke(app, args + ["--psnr-peak", "max"])
    assert isinstance(bad.exception, UserError) and "--psnr-peak" in str(bad.exception)
