"""The federated evaluation report: one self-contained HTML file with ROC curves and the table.

Every number in it came back from a site as an aggregate: the ROC curves are the sites'
TPRs on a fixed grid of FPRs, the table the AUCs, sensitivities and specificities with
their bootstrap 95% CIs (computed at the sites).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

from hub.evaluation.comparison import comparison_table, markdown_table, setting_of
from shared.evaluation_records import SiteEvaluation
from shared.fileio import atomic_write_text

__all__ = ["roc_figure", "write_report"]

_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}"
)


def _uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def roc_figure(site: str, label: str, evaluations: Sequence[SiteEvaluation]) -> Figure | None:
    """ROC curves of every setting for one site and label (None: no curve to draw)."""
    figure = Figure(figsize=(3.2, 3.2))
    axes = figure.add_subplot()
    drawn = 0
    for evaluation in evaluations:
        setting = setting_of(evaluation.tag, evaluation.site_id)
        result = evaluation.result(label)
        if evaluation.site_id != site or setting is None or result is None or not result.roc_tpr:
            continue
        axes.step(
            evaluation.roc_fpr_grid,
            result.roc_tpr,
            where="post",
            label=f"{setting} ({result.auc:.2f})",
        )
        drawn += 1
    if not drawn:
        return None
    axes.plot([0, 1], [0, 1], color="0.7", lw=0.8)
    axes.set(title=f"site {site}: {label}", xlabel="FPR", ylabel="TPR", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(fontsize=7, loc="lower right")
    return figure


def _html_table(markdown: str) -> str:
    lines = [
        line.strip("|").split("|") for line in markdown.splitlines() if not line.startswith("|---")
    ]
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in lines[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>"
        for row in lines[1:]
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_list(heading: str, reasons: dict) -> str:
    """``<h2>heading</h2>`` and a list of ``key: reason`` items, escaped."""
    items = "".join(
        f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in reasons.items()
    )
    return f"<h2>{html.escape(heading)}</h2><ul>{items}</ul>"


def write_report(
    path: Path,
    evaluations: Sequence[SiteEvaluation],
    failures: dict | None = None,
    title: str = "radshare federated evaluation",
    refusals: dict | None = None,
) -> Path:
    """Write ``report.html`` atomically: the table, refusals, failures, then ROC curves.

    ``refusals``: requests a site refused under its query policy (the reason names the
    site, the rule, the value and the limit), by ``tag/node``.
    """
    table = comparison_table(evaluations)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        "<p>AUC [95% bootstrap CI, computed at each site]; n/a (k+): withheld, fewer than the "
        "minimum positives or negatives. Settings: real = trained on the site's real train split "
        "(at the site); site-synthetic = on that site's synthetic archive; pooled = on the pooled "
        "synthetic archive of all sites.</p>",
        _html_table(markdown_table(table)),
    ]
    if refusals:
        parts.append(_html_list("Sites that refused the query", refusals))
    if failures:
        parts.append(_html_list("Sites that did not answer", failures))
    parts.append("<h2>ROC curves</h2>")
    for (site, label), _ in table.groupby(["site", "label"], sort=True):
        figure = roc_figure(site, label, evaluations)
        if figure is not None:
            parts.append(
                f'<img alt="ROC {html.escape(site)} {html.escape(label)}" src="{_uri(figure)}">'
            )
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>"
    text = f"<!doctype html><html><head>{head}</head><body>{''.join(parts)}</body></html>"
    atomic_write_text(path, text)
    return Path(path)
