"""The hub's side of ``evaluate.classifier``: name a classifier or a recipe, collect aggregates.

    results = evaluate_on_sites(grid, request_content(request), timeout_s=600)

:func:`request_content` builds the message content: the request JSON, which names a
published classifier by registry id and weights sha256 (each site pulls and verifies
the bundle itself and refuses anything unregistered), optional synthetic enrichment
images — never a real image: the hub has none — and, only for the validation round
of federated labeller training (``hub.flower.fedavg_labeller``), inline weights;
:func:`evaluate_on_sites` sends it to every SuperNode (or the given ones) and parses
each reply into a :class:`~shared.evaluation_records.SiteEvaluation`, collecting sites
that refused under their query policy (the rule, value and limit) and sites that failed
(or did not answer in time) instead of aborting. :func:`run_requests` runs
several named requests, e.g. the comparison's (a) real-only (trained at each site),
(b) each site's synthetic archive and (c) the pooled archive.

Run-config keys of the ``evaluate`` task: see :func:`evaluation_contents`, plus
``out-dir`` and ``timeout-s``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from hub.flower.fanout import SiteReplies, ask_sites
from shared.errors import ConfigError, FederationError
from shared.evaluation_records import (
    CLASSIFIER_RECORD,
    ENRICH_RECORD,
    REQUEST_RECORD,
    EvaluationRequest,
    RareClassSetting,
    SiteEvaluation,
    TrainRecipe,
    evaluation_from_records,
)
from shared.networks.labeller import Labeller, LabellerConfig

__all__ = [
    "MESSAGE_TYPE",
    "SiteResults",
    "evaluate_main",
    "evaluate_on_sites",
    "evaluation_contents",
    "request_content",
    "run_requests",
]

log = logging.getLogger("radshare.hub.flower")

MESSAGE_TYPE = "evaluate.classifier"


@dataclass
class SiteResults(SiteReplies):
    """Replies by site id; refusals (site, rule, value, limit) and failures by node id."""

    evaluations: dict[str, SiteEvaluation] = field(default_factory=dict)


def request_content(
    request: EvaluationRequest,
    classifier: Labeller | None = None,
    enrich: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> RecordDict:
    """Message content: the request, optional enrichment images, and inline weights.

    ``classifier`` (inline weights) only for a federated-labeller validation round;
    a published classifier is named by ``request.classifier_id`` and ``weights_sha256``.
    """
    if request.classifier_id is not None and classifier is not None:
        raise FederationError("a registered classifier is named by id; send no weights")
    if request.mode == "evaluate" and classifier is None and request.classifier_id is None:
        raise FederationError("mode 'evaluate' needs a classifier_id (or inline weights)")
    if classifier is not None and classifier.cfg != request.labeller_config:
        raise FederationError("the classifier's config differs from request.labeller_config")
    content = RecordDict({REQUEST_RECORD: ConfigRecord({"json": request.model_dump_json()})})
    if classifier is not None:
        state = {k: v.detach().cpu() for k, v in classifier.state_dict().items()}
        content[CLASSIFIER_RECORD] = ArrayRecord(state)
    if enrich is not None:
        images, labels, mask = enrich
        content[ENRICH_RECORD] = ArrayRecord(
            {
                "images": torch.from_numpy(np.ascontiguousarray(images, np.uint8)),
                "labels": torch.from_numpy(np.ascontiguousarray(labels, np.float32)),
                "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32)),
            }
        )
    return content


def evaluate_on_sites(
    grid: Grid,
    content: RecordDict,
    *,
    node_ids: Sequence[int] | None = None,
    timeout_s: float = 3600.0,
) -> SiteResults:
    """Send ``content`` as ``evaluate.classifier`` to each node; parse the replies."""
    results = SiteResults()
    answers = ask_sites(
        grid, content, MESSAGE_TYPE, results, node_ids=node_ids, timeout_s=timeout_s
    )
    for node, reply in answers:
        try:
            evaluation = evaluation_from_records(reply.content)
        except (FederationError, ValueError, KeyError) as error:
            results.failures[node] = f"malformed reply: {error}"
            continue
        results.evaluations[evaluation.site_id] = evaluation
    log.info(
        "evaluate.classifier: %d sites answered, %d refused, %d failed",
        len(results.evaluations),
        len(results.refusals),
        len(results.failures),
    )
    return results


def run_requests(
    grid: Grid,
    contents: Mapping[str, RecordDict],
    *,
    node_ids: Sequence[int] | None = None,
    timeout_s: float = 3600.0,
) -> dict[str, SiteResults]:
    """Run several named requests one after the other: tag -> results."""
    return {
        tag: evaluate_on_sites(grid, content, node_ids=node_ids, timeout_s=timeout_s)
        for tag, content in contents.items()
    }


def _parse_classifiers(text: str) -> dict[str, Path]:
    """``"pooled=/x/bundle,synthetic:a=/y/bundle"`` → tag → bundle folder."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        tag, sep, path = item.partition("=")
        if not sep or not tag or not path:
            raise ConfigError(f"run_config 'classifiers': expected tag=bundle_dir, got {item!r}")
        out[tag] = Path(path)
    return out


def _enrich_arrays(archive: Path, cfg: LabellerConfig, label: str, num_images: int, seed: int):
    """uint8 images, labels and masks of ``num_images`` archive images positive for ``label``."""
    from hub.pooling.dataset import ArchiveImages, load_training_table

    table = load_training_table(archive, label_space=cfg.class_names)
    rows = np.flatnonzero(table.labels[:, list(cfg.class_names).index(label)] > 0)
    if len(rows) < num_images:
        raise ConfigError(f"{archive}: {len(rows)} {label!r} images, {num_images} asked for")
    rows = np.sort(np.random.default_rng(seed).choice(rows, size=num_images, replace=False))
    images = ArchiveImages(table.subset(rows), cfg.resolution_px)
    stacked = np.stack([images[i][0][0].numpy() for i in range(len(images))])
    return stacked, table.labels[rows], table.mask[rows]


def evaluation_contents(run_config: Mapping[str, object]) -> dict[str, RecordDict]:
    """The requests a run asks for: one per classifier, the real baseline, rare-class variants.

    Run-config keys: ``classifiers`` (``tag=bundle_dir,...``: pulled classifier bundles,
    each sent as its registry id and weights sha256, never its weights), ``keyring``
    (consortium keyring file) or ``hub-public-key`` (PEM file) to verify them with,
    ``sites``, ``real-baseline`` (bool), ``epochs``, ``lr``,
    ``num-resamples``, ``min-count``, ``seed``, ``rare-label``, ``rare-keep-fraction``,
    ``rare-keep-unit`` (``patients``: whole positive patients are kept or cut; ``images``),
    ``rare-enrich-archive``, ``rare-enrich-images``.
    """
    from shared.artifacts.classifier import WEIGHTS_FILE as CLASSIFIER_WEIGHTS_FILE
    from shared.artifacts.classifier import load_classifier_bundle
    from shared.artifacts.keyring import ConsortiumKeyring

    config: Any = run_config  # TOML values: str, int, float, bool
    key, keyring = config.get("hub-public-key"), config.get("keyring")
    trusted: Any = ConsortiumKeyring.load(Path(str(keyring))) if keyring else None
    if key:
        trusted = Path(str(key))
    seed = int(config.get("seed", 0))
    sites = [s.strip() for s in str(config.get("sites", "all")).split(",") if s.strip()]
    common: dict[str, Any] = {
        "num_resamples": int(config.get("num-resamples", 10_000)),
        "min_count": int(config.get("min-count", 5)),
        "seed": seed,
        "sites": None if sites in ([], ["all"]) else sites,
    }
    recipe = TrainRecipe(
        max_epochs=int(config.get("epochs", 10)), lr=float(config.get("lr", 1e-3)), seed=seed
    )
    contents: dict[str, RecordDict] = {}
    cfg = None
    for tag, bundle in _parse_classifiers(str(run_config.get("classifiers", ""))).items():
        if trusted is None:
            raise ConfigError("run_config 'classifiers' needs 'keyring' or 'hub-public-key'")
        net, card, signed = load_classifier_bundle(bundle, trusted)
        thresholds = {c.name: c.threshold_logit for c in card.classes}
        request = EvaluationRequest(
            tag=tag,
            labeller_config=net.cfg,
            fallback_thresholds_logit=thresholds,
            classifier_id=signed.artifact_id,
            weights_sha256=signed.model.files[CLASSIFIER_WEIGHTS_FILE].sha256,
            **common,
        )
        contents[tag] = request_content(request)
        cfg = cfg or net.cfg
    if cfg is not None and bool(run_config.get("real-baseline", False)):
        request = EvaluationRequest(
            tag="real", mode="train-real", labeller_config=cfg, recipe=recipe, **common
        )
        contents["real"] = request_content(request)
    label = str(run_config.get("rare-label", ""))
    if cfg is not None and label:
        fraction = float(config.get("rare-keep-fraction", 0.05))
        unit = str(config.get("rare-keep-unit", "patients"))
        if unit not in ("images", "patients"):
            raise ConfigError(f"run_config rare-keep-unit={unit!r}: use 'patients' or 'images'")
        for strategy in ("none", "oversample", "synthetic"):
            rare = RareClassSetting(
                label=label,
                keep_fraction=fraction,
                strategy=strategy,
                seed=common["seed"],
                unit=unit,  # type: ignore[arg-type]  # checked above
            )
            request = EvaluationRequest(
                tag=f"rare:{strategy}",
                mode="train-real",
                labeller_config=cfg,
                recipe=recipe,
                rare_class=rare,
                **common,
            )
            enrich = None
            if strategy == "synthetic":
                archive = Path(str(run_config["rare-enrich-archive"]))
                count = int(config.get("rare-enrich-images", 100))
                enrich = _enrich_arrays(archive, cfg, label, count, common["seed"])
            contents[request.tag] = request_content(request, enrich=enrich)
    if not contents:
        raise ConfigError("run_config names no classifier ('classifiers=tag=bundle_dir,...')")
    return contents


def evaluate_main(grid: Grid, run_config: Mapping[str, object]) -> Path:
    """The ServerApp's ``evaluate`` task: all requests to all sites; results, report in out-dir."""
    from hub.evaluation.comparison import comparison_table, markdown_table, save_evaluations
    from hub.evaluation.report import write_report

    out = Path(str(run_config.get("out-dir", "evaluation")))
    out.mkdir(parents=True, exist_ok=True)
    timeout_s = float(str(run_config.get("timeout-s", 3600.0)))
    results = run_requests(grid, evaluation_contents(run_config), timeout_s=timeout_s)
    evaluations = [e for r in results.values() for e in r.evaluations.values()]
    failures = {
        f"{tag}/node {node}": why for tag, r in results.items() for node, why in r.failures.items()
    }
    refusals = {
        f"{tag}/node {node}": why for tag, r in results.items() for node, why in r.refusals.items()
    }
    save_evaluations(out / "evaluations.json", evaluations, failures, refusals)
    table = comparison_table(evaluations)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(markdown_table(table) + "\n")
    write_report(out / "report.html", evaluations, failures, refusals=refusals)
    log.info(
        "evaluation: %d replies, %d failures; report %s",
        len(evaluations),
        len(failures),
        out / "report.html",
    )
    return out
