"""Assemble the comparison from the sites' aggregate replies: one row per (site, label, setting).

Settings are the tags the hub gave its requests, e.g. ``real`` (a: trained on the
site's real train split, at the site), ``site-synthetic`` (b: trained on that site's
own archive) and ``pooled`` (c: trained on the pooled archive of all sites). A
classifier tagged ``synthetic:<site>`` is that site's archive classifier: at site
``s`` the comparison takes ``synthetic:s`` as setting (b).

Results are saved as ``evaluations.json`` (every :class:`SiteEvaluation`, as sent) and
the table as ``comparison.csv`` / Markdown (Segal et al. Table 2; Han et al. Fig. 3).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from shared.evaluation_records import SiteEvaluation

__all__ = [
    "comparison_table",
    "load_evaluations",
    "markdown_table",
    "save_evaluations",
    "setting_of",
]

COLUMNS = (
    "site",
    "label",
    "setting",
    "n_pos",
    "n_neg",
    "auc",
    "auc_low",
    "auc_high",
    "sensitivity",
    "sensitivity_low",
    "sensitivity_high",
    "specificity",
    "specificity_low",
    "specificity_high",
    "threshold_source",
)


def setting_of(tag: str, site_id: str) -> str | None:
    """The comparison setting of a classifier tag at a site (None: another site's archive)."""
    if tag.startswith("synthetic:"):
        return "site-synthetic" if tag.split(":", 1)[1] == site_id else None
    return tag


def comparison_table(evaluations: Iterable[SiteEvaluation]) -> pd.DataFrame:
    """Rows (site, label, setting) with counts, AUC, sensitivity, specificity and CIs."""
    rows = []
    for evaluation in evaluations:
        setting = setting_of(evaluation.tag, evaluation.site_id)
        if setting is None:
            continue
        for c in evaluation.classes:
            if c.threshold_source == "not-annotated":
                continue
            row = {k: getattr(c, k) for k in COLUMNS if hasattr(c, k)}
            rows.append({**row, "site": evaluation.site_id, "label": c.name, "setting": setting})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(["site", "label", "setting"], kind="stable").reset_index(drop=True)


def _cell(row: pd.Series) -> str:
    if pd.isna(row["auc"]):
        return f"n/a ({int(row['n_pos'])}+)"
    return f"{row['auc']:.3f} [{row['auc_low']:.3f}, {row['auc_high']:.3f}]"


def markdown_table(
    table: pd.DataFrame, settings: Sequence[str] = ("real", "site-synthetic", "pooled")
) -> str:
    """AUC [95% CI] per site and label, one column per setting (``n/a (k+)``: withheld)."""
    present = [s for s in settings if s in set(table["setting"])]
    header = "| site | label | positives/negatives (test) | " + " | ".join(present) + " |"
    lines = [header, "|" + "---|" * (3 + len(present))]
    for (site, label), group in table.groupby(["site", "label"], sort=True):
        by_setting = {r["setting"]: r for _, r in group.iterrows()}
        first = group.iloc[0]
        cells = [_cell(by_setting[s]) if s in by_setting else "–" for s in present]
        counts = f"{int(first['n_pos'])}/{int(first['n_neg'])}"
        lines.append(f"| {site} | {label} | {counts} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_evaluations(
    path: Path,
    evaluations: Iterable[SiteEvaluation],
    failures: dict | None = None,
    refusals: dict | None = None,
) -> Path:
    """Write ``evaluations.json`` atomically (refusals: by a site's query policy)."""
    body = {
        "evaluations": [e.model_dump(mode="json") for e in evaluations],
        "failures": {str(k): v for k, v in (failures or {}).items()},
        "refusals": {str(k): v for k, v in (refusals or {}).items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(path)
    return path


def load_evaluations(path: Path) -> tuple[list[SiteEvaluation], dict[str, str]]:
    """Read ``evaluations.json``."""
    body = json.loads(Path(path).read_text())
    return [SiteEvaluation.model_validate(e) for e in body["evaluations"]], dict(
        body.get("failures", {})
    )
