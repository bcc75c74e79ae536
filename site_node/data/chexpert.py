"""The CheXpert layout: ``Path``, ``Frontal/Lateral``, ``AP/PA`` and 1/0/-1/blank labels.

CheXpert (Irvin et al. 2019) marks each finding 1 (positive), 0 (negative), -1
(uncertain) or blank (not mentioned). Blank becomes 0; -1 follows an
:class:`UncertaintyPolicy`. The default, ``positive,Consolidation=negative``, is what
Han et al. did (supplement, "Generating labels": uncertain → 1.0 except Consolidation
→ 0.0, after the per-label comparison in Irvin et al.). Findings are then mapped onto
the NIH label space with :data:`shared.labels.CHEXPERT_TO_NIH`; findings without an
NIH counterpart (Lung Opacity, Fracture, ...) are dropped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import ConfigError
from shared.labels import CHEXPERT_TO_NIH, NIH_LABELS
from site_node.data.records import LabelRecord, RowRejectedError, normalise_view
from site_node.data.report import IssueCategory

__all__ = [
    "CHEXPERT_LABELS",
    "DEFAULT_UNCERTAINTY",
    "UncertaintyPolicy",
    "parse_chexpert_row",
]

#: CheXpert's 14 observation columns, in its own order.
CHEXPERT_LABELS: tuple[str, ...] = tuple(CHEXPERT_TO_NIH)
DEFAULT_UNCERTAINTY = "positive,Consolidation=negative"

_POSITIVE_WORDS = frozenset({"positive", "ones", "one", "1"})
_NEGATIVE_WORDS = frozenset({"negative", "zeros", "zero", "0"})
_PATIENT_RE = re.compile(r"patient(\d+)")
_STUDY_RE = re.compile(r"study(\d+)")


def _did_you_mean(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_word(word: str, token: str) -> bool:
    key = word.strip().lower()
    if key in _POSITIVE_WORDS:
        return True
    if key in _NEGATIVE_WORDS:
        return False
    raise ConfigError(
        f"--chexpert-uncertain: {token!r} has value {word!r}; use 'positive' or 'negative'"
    )


@dataclass(frozen=True)
class UncertaintyPolicy:
    """What an uncertain (-1) CheXpert label becomes: a default plus per-label overrides."""

    default_positive: bool = True
    overrides: tuple[tuple[str, bool], ...] = (("Consolidation", False),)

    @classmethod
    def parse(cls, text: str) -> UncertaintyPolicy:
        """Parse ``"positive"``, ``"negative"`` or ``"positive,Consolidation=negative,..."``.

        Label names are CheXpert column names. Raises ConfigError naming the bad token.
        """
        default: bool | None = None
        overrides: dict[str, bool] = {}
        for token in (t.strip() for t in text.split(",") if t.strip()):
            if "=" not in token:
                if default is not None:
                    raise ConfigError(f"--chexpert-uncertain: two defaults in {text!r}")
                default = _parse_word(token, token)
                continue
            name, word = (part.strip() for part in token.split("=", 1))
            if name not in CHEXPERT_LABELS:
                raise ConfigError(
                    f"--chexpert-uncertain: unknown CheXpert label {name!r}"
                    f"{_did_you_mean(name, list(CHEXPERT_LABELS))}; "
                    f"valid: {', '.join(CHEXPERT_LABELS)}"
                )
            overrides[name] = _parse_word(word, token)
        if default is None:
            raise ConfigError(
                f"--chexpert-uncertain: {text!r} gives no default; start with 'positive' "
                "or 'negative', e.g. 'positive,Consolidation=negative'"
            )
        return cls(default_positive=default, overrides=tuple(sorted(overrides.items())))

    def __str__(self) -> str:
        def word(positive: bool) -> str:
            return "positive" if positive else "negative"

        parts = [word(self.default_positive)]
        parts += [f"{name}={word(positive)}" for name, positive in self.overrides]
        return ",".join(parts)

    def uncertain_is_positive(self, chexpert_label: str) -> bool:
        """Whether -1 in ``chexpert_label``'s column counts as positive."""
        return dict(self.overrides).get(chexpert_label, self.default_positive)


def _label_value(cell: str, column: str, policy: UncertaintyPolicy) -> bool:
    text = cell.strip()
    if not text:
        return False  # blank: not mentioned in the report
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if number == 1.0:
        return True
    if number == 0.0:
        return False
    if number == -1.0:
        return policy.uncertain_is_positive(column)
    raise RowRejectedError(IssueCategory.BAD_VALUE, column, cell, "expected 1, 0, -1 or blank")


def _chexpert_view(fields: Mapping[str, str]) -> str | None:
    frontal_lateral = normalise_view(fields.get("Frontal/Lateral"))
    ap_pa = normalise_view(fields.get("AP/PA"))
    if frontal_lateral == "LATERAL":
        return "LATERAL"
    if frontal_lateral == "FRONTAL":
        return ap_pa if ap_pa in ("AP", "PA") else "FRONTAL"
    if frontal_lateral is not None:
        raise RowRejectedError(
            IssueCategory.BAD_VALUE,
            "Frontal/Lateral",
            fields["Frontal/Lateral"],
            "expected Frontal or Lateral",
        )
    return ap_pa


def parse_chexpert_row(
    fields: Mapping[str, str], line: int, policy: UncertaintyPolicy
) -> LabelRecord:
    """Parse one CheXpert row; raises RowRejectedError with the field and value at fault."""
    path = fields.get("Path", "").strip()
    if not path:
        raise RowRejectedError(IssueCategory.MISSING_FIELD, "Path", "", "empty image path")
    patient = _PATIENT_RE.search(path)
    if patient is None:
        raise RowRejectedError(
            IssueCategory.BAD_VALUE, "Path", path, "no 'patientNNNNN' folder to take the id from"
        )
    study = _STUDY_RE.search(path)
    nih_labels: set[str] = set()
    for column in CHEXPERT_LABELS:
        if column in fields and _label_value(fields[column], column, policy):
            nih_name = CHEXPERT_TO_NIH[column]
            if nih_name is not None:
                nih_labels.add(nih_name)
    return LabelRecord(
        line=line,
        image_ref=path,
        patient_id=patient.group(1),
        follow_up=int(study.group(1)) - 1 if study else None,
        view=_chexpert_view(fields),
        labels=tuple(name for name in NIH_LABELS if name in nih_labels),
    )
