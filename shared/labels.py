"""The radshare label space: NIH ChestX-ray14's 14 findings plus No Finding.

Other vocabularies (CheXpert) are mapped onto it here, so that both the site
node and the hub speak one label space.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from shared.errors import LabelError

__all__ = [
    "CHEXPERT_TO_NIH",
    "NIH_FINDINGS",
    "NIH_LABELS",
    "NO_FINDING",
    "labels_to_multi_hot",
    "parse_finding_labels",
    "validate_labels",
]

NO_FINDING = "No Finding"

#: The 14 NIH ChestX-ray14 findings, in the order of the NIH paper and torchxrayvision.
NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)

#: The full label space: the 14 findings, then "No Finding".
NIH_LABELS: tuple[str, ...] = (*NIH_FINDINGS, NO_FINDING)

#: CheXpert column names mapped onto the NIH label space (None: no NIH counterpart).
CHEXPERT_TO_NIH: dict[str, str | None] = {
    "No Finding": NO_FINDING,
    "Enlarged Cardiomediastinum": None,
    "Cardiomegaly": "Cardiomegaly",
    "Lung Opacity": None,
    "Lung Lesion": "Nodule",
    "Edema": "Edema",
    "Consolidation": "Consolidation",
    "Pneumonia": "Pneumonia",
    "Atelectasis": "Atelectasis",
    "Pneumothorax": "Pneumothorax",
    "Pleural Effusion": "Effusion",
    "Pleural Other": "Pleural_Thickening",
    "Fracture": None,
    "Support Devices": None,
}


def _suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_labels(labels: Iterable[str], *, where: str = "labels") -> list[str]:
    """Return ``labels`` as a list, raising LabelError on the first unknown name."""
    out = []
    for label in labels:
        if label not in NIH_LABELS:
            raise LabelError(
                f"{where}: unknown label {label!r}{_suggest(label, NIH_LABELS)}; "
                f"valid labels: {', '.join(NIH_LABELS)}"
            )
        out.append(label)
    return out


def parse_finding_labels(text: str, *, where: str = "Finding Labels") -> list[str]:
    """Parse an NIH ``Finding Labels`` cell ("A|B" or "No Finding") into label names."""
    parts = [p.strip() for p in str(text).split("|") if p.strip()]
    if not parts:
        raise LabelError(f"{where}: empty label cell")
    return validate_labels(parts, where=where)


def labels_to_multi_hot(
    labels: Sequence[str], label_space: Sequence[str] = NIH_LABELS
) -> list[int]:
    """Multi-hot vector of ``labels`` over ``label_space`` (1 where present)."""
    present = set(labels)
    return [int(name in present) for name in label_space]
