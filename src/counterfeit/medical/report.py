"""Evaluation outputs: metric tables (CSV, JSON, Markdown), per-patient bar charts, and reports.

The report is written twice: `report.md` (images linked) and a self-contained
`report.html` (images embedded as base64 PNG, pipe tables converted by a tiny
converter, so there is no markdown dependency).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from counterfeit.atomic import atomic_path, atomic_write_text
from counterfeit.errors import InputFileError
from counterfeit.medical.evaluate import METRIC_KEYS, summarize

# Display name, unit and decimals per metric (the seed's table uses one decimal for MAE/PSNR).
METRIC_FORMAT = {"mae": ("MAE", "HU", 1), "psnr": ("PSNR", "dB", 1), "ssim": ("SSIM", "", 3)}
MEAN_SD_LABEL = "mean ± SD"


@dataclass
class ReportFigure:
    """A PNG of the report and the caption that says what it shows."""

    path: Path
    caption: str


@dataclass
class ReportSection:
    """One report section: a title, a markdown body (paragraphs, lists, pipe tables), and figures."""

    title: str
    markdown: str = ""
    figures: list[ReportFigure] = field(default_factory=list)


def format_value(key: str, value: float) -> str:
    """A metric value with the metric's decimals; inf/nan spelt out."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{METRIC_FORMAT.get(key, ('', '', 3))[2]}f}"


def format_mean_sd(key: str, stats: Mapping[str, float] | None) -> str:
    """'73.7 ± 2.3' from {"mean", "sd"}."""
    if not stats:
        return "—"
    return f"{format_value(key, stats['mean'])} ± {format_value(key, stats['sd'])}"


def _keys(rows: Sequence[Mapping]) -> list[str]:
    return [k for k in METRIC_KEYS if rows and all(k in row for row in rows)]


def metrics_table_markdown(rows: Sequence[Mapping]) -> str:
    """Pipe table: one row per patient, then the mean ± SD row."""
    keys = _keys(rows)
    summary = summarize(rows, keys)
    header = ["patient"] + [_heading(k) for k in keys]
    lines = [_pipe_row(header), _pipe_row(["---"] * len(header))]
    for row in rows:
        lines.append(_pipe_row([str(row["subject"])] + [format_value(k, row[k]) for k in keys]))
    lines.append(_pipe_row([MEAN_SD_LABEL] + [format_mean_sd(k, summary.get(k)) for k in keys]))
    return "\n".join(lines) + "\n"


def write_metrics_table(rows: Sequence[Mapping], out_dir: str | os.PathLike, stem: str = "metrics") -> dict[str, Path]:
    """Write `<stem>.csv`, `<stem>.json` and `<stem>.md` in `out_dir`; return their paths by format.

    CSV: full-precision per-patient rows, then rows 'mean' and 'sd' (sample SD, ddof=1).
    JSON: {"rows": [...], "summary": summarize(rows)}; non-finite numbers are written as
    the strings "inf", "-inf", "nan" (strict JSON has no such numbers; float() reads them back).
    Markdown: per-patient rows plus a 'mean ± SD' row.
    """
    out_dir = Path(out_dir)
    keys = _keys(rows)
    summary = summarize(rows, keys)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["subject"] + keys)
    for row in rows:
        writer.writerow([row["subject"]] + [repr(float(row[k])) for k in keys])
    for stat in ("mean", "sd"):
        writer.writerow([stat] + [repr(summary[k][stat]) for k in keys])

    paths = {"csv": out_dir / f"{stem}.csv", "json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    atomic_write_text(paths["csv"], buf.getvalue())
    payload = {"rows": [dict(row) for row in rows], "summary": summary}
    atomic_write_text(paths["json"], json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["md"], metrics_table_markdown(rows))
    return paths


def plot_per_patient(rows: Sequence[Mapping], out_png: str | os.PathLike, title: str = "") -> Path:
    """Bar chart, one panel per metric, one bar per patient, dashed line at the mean; `title` above (the model)."""
    # A bare Figure renders with Agg and touches no global pyplot state (safe in threads/servers).
    from matplotlib.figure import Figure

    keys = _keys(rows)
    subjects = [str(row["subject"]) for row in rows]
    fig = Figure(figsize=(3.2 * len(keys) + 1, 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [float(row[key]) for row in rows]
        finite = [v if math.isfinite(v) else 0.0 for v in values]
        ax.bar(range(len(rows)), finite, color="#4c72b0")
        shown = [v for v in values if math.isfinite(v)]
        if shown:
            ax.axhline(sum(shown) / len(shown), color="#c44e52", linestyle="--", linewidth=1, label="mean")
        for i, v in enumerate(values):  # a bar cannot show inf (identical images) or nan: label it
            if not math.isfinite(v):
                ax.text(i, 0, format_value(key, v), ha="center", va="bottom", fontsize=8)
        name, unit, _ = METRIC_FORMAT[key]
        ax.set_title(f"{name} ({unit})" if unit else name)
        ax.set_xticks(range(len(rows)), subjects, rotation=45, ha="right", fontsize=8)
    fig.suptitle(f"{title} (dashed line: mean)" if title else "dashed line: mean", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out_png


def comparison_table_markdown(results: Mapping[str, Sequence[Mapping]]) -> str:
    """The seed's results layout for several models.

    Columns: patient | MAE <model> ... | PSNR <model> ... | SSIM <model> ... (SSIM only
    when every model has it); one row per patient (patients in the order of the first
    model, then any others), '—' where a model lacks a patient; last row mean ± SD.
    """
    models = list(results)
    keys = [k for k in METRIC_KEYS if models and all(k in _keys(results[m]) for m in models)]
    subjects: list[str] = []
    for model in models:
        subjects += [str(r["subject"]) for r in results[model] if str(r["subject"]) not in subjects]
    by_subject = {m: {str(r["subject"]): r for r in results[m]} for m in models}
    summaries = {m: summarize(results[m], keys) for m in models}

    header = ["patient"] + [f"{METRIC_FORMAT[k][0]} {m}" for k in keys for m in models]
    lines = [_pipe_row(header), _pipe_row(["---"] * len(header))]
    for subject in subjects:
        cells = [subject]
        for key in keys:
            for model in models:
                row = by_subject[model].get(subject)
                cells.append(format_value(key, row[key]) if row else "—")
        lines.append(_pipe_row(cells))
    lines.append(_pipe_row([MEAN_SD_LABEL] + [format_mean_sd(k, summaries[m].get(k)) for k in keys for m in models]))
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | os.PathLike, *, title: str, sections: Sequence[ReportSection]
) -> tuple[Path, Path]:
    """Write `report.md` (images linked relative to out_dir) and a self-contained `report.html`."""
    out_dir = Path(out_dir)
    md_parts = [f"# {title}\n"]
    html_parts = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        md_parts.append(f"## {section.title}\n")
        html_parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.markdown.strip():
            md_parts.append(section.markdown.strip() + "\n")
            html_parts.append(markdown_to_html(section.markdown))
        for figure in section.figures:
            image = Path(figure.path)
            if not image.is_file():
                raise InputFileError(image, "report image not found")
            md_parts.append(f"![{figure.caption}]({_relative(image, out_dir)})\n\n*{figure.caption}*\n")
            data = base64.b64encode(image.read_bytes()).decode("ascii")
            caption = html.escape(figure.caption)
            html_parts.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption} <span class=file>({html.escape(image.name)})</span></figcaption></figure>"
            )
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, "\n".join(md_parts))
    atomic_write_text(html_path, _HTML_PAGE.format(title=html.escape(title), body="\n".join(html_parts)))
    return md_path, html_path


def markdown_to_html(text: str) -> str:
    """Tiny converter for what reports use: #-headings, pipe tables, '-' lists, ``` blocks, paragraphs.

    Inline: `code`, **bold**, *italic*. Everything else is escaped text.
    """
    out: list[str] = []
    lines = text.strip("\n").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
        elif m := re.match(r"^(#{1,6})\s+(.*)$", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(_table_html(lines[i:j]))
            i = j
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append("<li>" + _inline(re.sub(r"^\s*[-*]\s+", "", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
    return "\n".join(out)


def _starts_block(line: str) -> bool:
    s = line.lstrip()
    return s.startswith(("|", "```")) or bool(re.match(r"^(#{1,6}|[-*])\s+", s))


def _table_html(lines: Sequence[str]) -> str:
    rows = [_split_pipe_row(line) for line in lines]
    is_rule = len(rows) > 1 and all(re.fullmatch(r":?-{3,}:?", c.strip()) for c in rows[1])
    head, body = (rows[0], rows[2:]) if is_rule else (None, rows)
    parts = ["<table>"]
    if head is not None:
        parts.append("<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>")
    parts.append("<tbody>")
    for row in body:
        # The mean ± SD row closes metric tables; make it stand out.
        opening = '<tr class="summary">' if row and row[0] == MEAN_SD_LABEL else "<tr>"
        parts.append(opening + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _split_pipe_row(line: str) -> list[str]:
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") and not s.endswith("\\|") else s
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", text)


def _pipe_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _heading(key: str) -> str:
    name, unit, _ = METRIC_FORMAT[key]
    return f"{name} ({unit})" if unit else name


def _relative(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # different drive on Windows
        return path.resolve().as_posix()


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return _json_safe(obj.item())
    return obj


_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead {{ background: #f0f0f0; }}
tr.summary {{ font-weight: 600; }}
img {{ max-width: 100%; }}
figure {{ margin: 1rem 0; }}
figcaption {{ font-size: 0.85rem; color: #666; }}
code, pre {{ background: #f6f6f6; }}
pre {{ padding: 0.6rem; overflow-x: auto; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
