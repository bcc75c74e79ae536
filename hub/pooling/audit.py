"""Pooling under the audit policy: the generator of every archive must be cleared.

Each source archive names its generator: a synthetic archive in ``manifest.json``
(``generator_id``), a pooled archive in ``pool_manifest.json`` (``generators``). Every
one goes through the hub's audit policy (``hub.audit.gate``) again at pooling time, so
a generator withdrawn, or re-audited and failed, after its archive was made is
refused now. An archive that names no generator (a hand-made folder) is ``unknown``:
refused unless ``--override-audit``. The decisions, overrides included, go into the
pooled manifest's ``generators``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hub.audit.gate import AuditGate
from hub.pooling.archive import ArchiveSource
from shared.artifacts.archive import ARCHIVE_MANIFEST, SYNTHETIC_MANIFEST_FILE
from shared.artifacts.audit_state import AuditDecision

__all__ = ["archive_generator_ids", "clear_archives"]


def archive_generator_ids(folder: Path) -> list[str]:
    """The generator ids an archive folder names (empty: it names none)."""
    folder = Path(folder)
    for name, key in ((SYNTHETIC_MANIFEST_FILE, "generator_id"), (ARCHIVE_MANIFEST, "generators")):
        path = folder / name
        if not path.is_file():
            continue
        try:
            raw = json.loads(path.read_bytes())
        except ValueError:
            return []
        if not isinstance(raw, dict):
            return []
        if key == "generator_id":
            value = raw.get(key)
            return [value] if isinstance(value, str) and value else []
        generators = raw.get(key) or {}
        named = {g.get("generator_id") for g in generators.values() if isinstance(g, dict)}
        return sorted(str(g) for g in named if isinstance(g, str) and g)
    return []


def clear_archives(
    sources: Sequence[ArchiveSource], gate: AuditGate, override_reason: str | None = None
) -> dict[str, AuditDecision]:
    """Clear the generator of every source archive; ``{archive name [#generator]: decision}``.

    Raises:
        AuditPolicyError, RegistryError: a generator the policy refuses (nothing is written).
    """
    decisions: dict[str, AuditDecision] = {}
    for source in sources:
        ids = archive_generator_ids(source.folder)
        refs = ids or [f"unnamed:{source.archive_name}"[:128]]
        for i, ref in enumerate(refs):
            key = source.archive_name if len(refs) == 1 else f"{source.archive_name}#{i}"
            while key in decisions:
                key += "'"
            decisions[key] = gate.clear(ref, override_reason)
    return decisions
