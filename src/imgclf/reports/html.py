"""report.html: one self-contained page (styles inline, images as data: URIs), no scripts."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from imgclf.reports.metrics import METRIC_KEYS

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:24px 28px;color:#1d2430;background:#fff;line-height:1.45}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 10px;border-bottom:1px solid #dde2ea;
padding-bottom:4px}.sub{color:#5a6577;margin:0 0 12px}
.note{background:#fff4d6;border:1px solid #e8c46a;padding:8px 12px;border-radius:6px;margin:10px 0}
table{border-collapse:collapse;font-size:.92em;margin:6px 0}th,td{padding:4px 12px;text-align:right;
border-bottom:1px solid #eceff4}th{background:#f3f5f9;font-weight:600}td:first-child,th:first-child
{text-align:left}tr:hover td{background:#f8fafc}
.figs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0;max-width:100%}figure.half{flex:1 1 460px;max-width:570px}
figure img{max-width:100%;height:auto;border:1px solid #eceff4}
figcaption{color:#5a6577;font-size:.88em}
pre{background:#f6f8fa;border:1px solid #e1e5eb;padding:10px 12px;border-radius:6px;font-size:.85em;
overflow:auto}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.card{border:1px solid #dde2ea;border-radius:8px;padding:8px 14px;min-width:120px}
table.facts td{text-align:left}
.card b{display:block;font-size:1.35em}.card span{color:#5a6577;font-size:.85em}
"""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _metrics_table(metrics: dict[str, dict]) -> str:
    splits = list(metrics)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
    rows = []
    for key in ("n", *METRIC_KEYS, "ece"):
        label = key
        if key == "top_k_accuracy":
            ks = {m.get("top_k") for m in metrics.values()}
            label = f"top_k_accuracy (k={'/'.join(str(k) for k in sorted(ks - {None}))})"
        cells = "".join(f"<td>{_fmt(metrics[s].get(key))}</td>" for s in splits)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _frame_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v.item() if hasattr(v, 'item') else v)}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(png: Path, caption: str, half: bool) -> str:
    if not png.exists():
        return ""
    cls = ' class="half"' if half else ""
    return (f'<figure{cls}><img src="{data_uri(png)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render(
    *,
    title: str,
    subtitle: str,
    metrics: dict[str, dict],
    primary: str,
    per_class: pd.DataFrame,
    figures: dict[str, list[tuple[Path, str]]],
    config_text: str | None,
    notes: list[str] = (),
    facts: dict[str, str] | None = None,
) -> str:
    """The page: headline numbers, notes (e.g. an unfinished run), the metrics of every split,
    the figures by section, the per-class table of the primary split and the config."""
    m = metrics[primary]
    cards = [("accuracy", m.get("accuracy")), ("macro F1", m.get("f1_macro")),
             ("loss", m.get("loss")), ("ROC AUC (OvR)", m.get("roc_auc_ovr")), ("items", m.get("n"))]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">{html.escape(subtitle)}</p>',
        *[f'<div class="note">{html.escape(n)}</div>' for n in notes],
        f"<h2>Summary ({html.escape(primary)} split)</h2><div class=cards>",
        *[f'<div class="card"><b>{_fmt(v)}</b><span>{html.escape(k)}</span></div>' for k, v in cards],
        "</div>",
    ]
    if facts:
        parts.append('<table class="facts">' + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()
        ) + "</table>")
    parts += ["<h2>Metrics</h2>", _metrics_table(metrics)]
    for section, figs in figures.items():
        blocks = "".join(_figure(p, c, half=len(figs) > 1) for p, c in figs)
        if blocks:
            parts.append(f"<h2>{html.escape(section)}</h2><div class=figs>{blocks}</div>")
    parts += [f"<h2>Per class ({html.escape(primary)} split)</h2>", _frame_table(per_class)]
    if config_text:
        parts += ["<h2>Config</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="sub">Written by imgclf, {stamp}.</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def summary(title: str, subtitle: str, metrics: dict[str, dict], figures: list[tuple[Path, str]]) -> str:
    """A run in a notebook cell (Jupyter's ``_repr_html_``): its name, one line of what it is,
    accuracy, loss and macro F1 per split, and ``figures`` side by side (those that exist)."""
    splits = [s for s in ("val", "test") if isinstance(metrics.get(s), dict)]
    parts = [f"<p><b>{html.escape(title)}</b><br>{html.escape(subtitle)}</p>"]
    if splits:
        head = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
        rows = "".join(f"<tr><td>{key}</td>" + "".join(f"<td>{_fmt(metrics[s].get(key))}</td>"
                                                       for s in splits) + "</tr>"
                       for key in ("accuracy", "loss", "f1_macro"))
        parts.append(f"<table><tr><th></th>{head}</tr>{rows}</table>")
    images = "".join(f'<img src="{data_uri(png)}" alt="{html.escape(caption)}" '
                     'style="max-width:48%;display:inline-block;vertical-align:top">'
                     for png, caption in figures if png.exists())
    if images:
        parts.append(f"<div>{images}</div>")
    return "<div>" + "".join(parts) + "</div>"
