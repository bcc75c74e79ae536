"""The feature space of the audit's second test: the site's labeller where it fits, else fixed."""

from __future__ import annotations

import logging
from pathlib import Path

from shared.errors import ArtifactError
from site_node.audit.memorisation import Embedder, labeller_embedder

__all__ = ["site_embedder"]

log = logging.getLogger("radshare.site.audit")


def site_embedder(
    labeller_dir: Path | None, resolution_px: int, device: str = "cpu"
) -> tuple[Embedder | None, str | None]:
    """The labeller's embedding if ``labeller_dir`` holds an export at ``resolution_px``.

    Returns ``(None, None)`` (the audit's fixed block-mean embedding) when there is no
    labeller or it reads another resolution; a broken export raises ArtifactError.
    """
    if labeller_dir is None or not (Path(labeller_dir) / "labeller.json").is_file():
        return None, None
    from shared.artifacts.labeller import load_labeller_export

    labeller, card = load_labeller_export(
        labeller_dir,
        map_location=device,
        trust_local_export=True,  # this site's own export
    )
    if card.labeller_config.resolution_px != resolution_px:
        log.info(
            "labeller reads %d px, generator makes %d px: fixed embedding instead",
            card.labeller_config.resolution_px,
            resolution_px,
        )
        return None, None
    if not hasattr(labeller, "embed"):
        raise ArtifactError(f"{labeller_dir}: this labeller has no embed()")
    return labeller_embedder(labeller), "labeller"
