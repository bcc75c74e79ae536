"""Federated labeller training: FedAvg over the sites through Flower (``train.labeller``).

    result = fedavg_labeller(grid, FedAvgSettings(rounds=10), out_dir=Path("runs/fed-labeller"))

Each round the hub sends the global labeller to every site; each site trains it on its
real train split and replies with its weights (clipped and noised at the site when DP
is on); the hub averages them weighted by each site's number of training images
(McMahan et al. 2017) — or equally under DP, so that no count steers the average. After
the last round, every site evaluates the labeller on its real *validation* split
(``evaluate.classifier``); per class, the Youden thresholds and AUCs are averaged over
the sites weighted by their positives, and the export (``labeller.json`` +
``labeller.safetensors``) is what class optimisation reads. No site disclosed a
labeller of its own, and no image left a site.

Privacy accounting under DP: each round is one Gaussian mechanism on each site's whole
update (sampling rate 1); ε after ``rounds`` rounds at ``δ`` comes from the RDP
accountant (Mironov 2017) via Opacus.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from hub.flower.evaluate_server import evaluate_on_sites, request_content
from hub.flower.fanout import site_nodes
from shared.artifacts.labeller import (
    ClassMetrics,
    LabellerCard,
    LabellerDataSummary,
    LabellerTrainingSummary,
    save_labeller_export,
)
from shared.artifacts.manifest import DPParameters
from shared.errors import FederationError
from shared.evaluation_records import EvaluationRequest, SiteEvaluation, TrainRecipe
from shared.networks.labeller import Labeller, LabellerConfig

__all__ = [
    "FedAvgResult",
    "FedAvgSettings",
    "average_states",
    "dp_epsilon",
    "fedavg_labeller",
    "fedavg_main",
]

log = logging.getLogger("radshare.hub.flower")

MESSAGE_TYPE = "train.labeller"
REQUEST_RECORD, WEIGHTS_RECORD, METRICS_RECORD = "train.request", "train.weights", "train.metrics"


@dataclass(frozen=True)
class FedAvgSettings:
    """Rounds, local training, optional DP (update clipping norm and noise multiplier)."""

    labeller_config: LabellerConfig = field(
        default_factory=lambda: LabellerConfig.model_validate({})
    )
    rounds: int = 5
    local_epochs: int = 1
    recipe: TrainRecipe = field(default_factory=lambda: TrainRecipe())
    max_update_norm: float | None = None
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    num_resamples: int = 1000
    timeout_s: float = 3600.0


@dataclass
class FedAvgResult:
    """The averaged labeller, its card, and per-round site counts and losses."""

    labeller: Labeller
    card: LabellerCard
    history: list[dict[str, dict[str, float]]]


def dp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε of ``rounds`` Gaussian mechanisms (sampling rate 1) at ``delta`` (RDP accountant)."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))
    rdp = compute_rdp(q=1.0, noise_multiplier=noise_multiplier, steps=rounds, orders=orders)
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)


def average_states(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean of state dicts (integer tensors, e.g. BatchNorm's counters: the maximum)."""
    total = float(sum(weights))
    out = {}
    for key in states[0]:
        tensors = [s[key] for s in states]
        if tensors[0].is_floating_point():
            mean = torch.zeros_like(tensors[0], dtype=torch.float64)
            for t, w in zip(tensors, weights, strict=True):
                mean += t.double() * (w / total)
            out[key] = mean.to(tensors[0].dtype)
        else:
            out[key] = torch.stack(tensors).max(dim=0).values
    return out


def _round_content(net: Labeller, settings: FedAvgSettings, round_index: int) -> RecordDict:
    dp = None
    if settings.max_update_norm is not None:
        dp = {
            "max_update_norm": settings.max_update_norm,
            "noise_multiplier": settings.noise_multiplier,
        }
    request = {
        "labeller_config": net.cfg.model_dump(mode="json"),
        "round": round_index,
        "local_epochs": settings.local_epochs,
        "recipe": settings.recipe.model_dump(),
        "dp": dp,
    }
    return RecordDict(
        {
            REQUEST_RECORD: ConfigRecord({"json": json.dumps(request)}),
            WEIGHTS_RECORD: ArrayRecord({k: v.detach().cpu() for k, v in net.state_dict().items()}),
        }
    )


def _round(
    grid: Grid, net: Labeller, settings: FedAvgSettings, r: int, nodes: list[int]
) -> dict[str, dict[str, float]]:
    content = _round_content(net, settings, r)
    messages = [Message(content=content, dst_node_id=n, message_type=MESSAGE_TYPE) for n in nodes]
    states, weights, stats = [], [], {}
    for reply in grid.send_and_receive(messages, timeout=settings.timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("train.labeller round %d: node %d failed: %s", r, node, reply.error.reason)
            continue
        metrics: Any = reply.content.metric_records[METRICS_RECORD]
        site = str(reply.content.config_records["train.meta"]["site_id"])
        states.append(reply.content.array_records[WEIGHTS_RECORD].to_torch_state_dict())
        dp = settings.max_update_norm is not None
        weights.append(1.0 if dp else float(metrics["num_examples"]))
        stats[site] = {k: float(v) for k, v in metrics.items()}
    if not states:
        raise FederationError(f"train.labeller round {r}: no site answered")
    net.load_state_dict(average_states(states, weights))
    log.info("FedAvg round %d: %d sites", r, len(states))
    return stats


def _weighted_mean(pairs: Sequence[tuple[float, int]]) -> float | None:
    weight = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / weight if weight else None


def _combine(name: str, evaluations: list[SiteEvaluation]) -> ClassMetrics:
    """One class of the federated labeller: thresholds and AUCs averaged, weighted by positives."""
    results = [r for e in evaluations if (r := e.result(name)) is not None and r.auc is not None]
    thresholds = [(r.threshold_logit, r.n_pos) for r in results if r.threshold_logit is not None]
    aucs = [(r.auc, r.n_pos) for r in results if r.auc is not None]
    threshold = _weighted_mean(thresholds)
    auc = _weighted_mean(aucs)
    positives = sum(r.n_pos for e in evaluations if (r := e.result(name)) is not None)
    return ClassMetrics(name=name, threshold_logit=threshold, val_auc=auc, val_positives=positives)


def fedavg_labeller(
    grid: Grid, settings: FedAvgSettings, *, out_dir: Path | None = None
) -> FedAvgResult:
    """Run FedAvg, then federated validation for thresholds; export to ``out_dir`` if given."""
    # Construct the global labeller and find the sites.
    torch.manual_seed(settings.recipe.seed)
    net = Labeller(settings.labeller_config)
    nodes = site_nodes(grid)

    # Train: one round after the other.
    history = [_round(grid, net, settings, r, nodes) for r in range(settings.rounds)]

    # Thresholds and AUCs from every site's real validation split.
    request = EvaluationRequest(
        tag="federated-labeller",
        split="val",
        labeller_config=net.cfg,
        num_resamples=settings.num_resamples,
    )
    results = evaluate_on_sites(
        grid, request_content(request, net.eval()), node_ids=nodes, timeout_s=settings.timeout_s
    )
    evaluations = list(results.evaluations.values())
    classes = [_combine(name, evaluations) for name in net.cfg.class_names]
    aucs = [c.val_auc for c in classes if c.val_auc is not None]
    dp = None
    if settings.max_update_norm is not None and settings.noise_multiplier > 0:
        epsilon = dp_epsilon(settings.noise_multiplier, settings.rounds, settings.delta)
        dp = DPParameters(
            epsilon=epsilon,
            delta=settings.delta,
            noise_multiplier=settings.noise_multiplier,
            max_grad_norm=settings.max_update_norm,
            accountant="rdp (site-level update clipping)",
        )
    recipe = settings.recipe
    training = LabellerTrainingSummary(
        epochs_trained=settings.rounds * settings.local_epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        loss=f"masked weighted BCE; FedAvg over {len(evaluations)} sites, {settings.rounds} rounds",
    )
    train_images = (
        sum(int(h.get("num_examples", 0)) for h in history[-1].values()) if history else 0
    )
    card = LabellerCard(
        labeller_config=net.cfg,
        classes=classes,
        val_macro_auc=float(np.mean(aucs)) if aucs else None,
        training=training,
        data=LabellerDataSummary(images_per_split={"train": train_images}),
        dp=dp,
    )
    if out_dir is not None:
        save_labeller_export(out_dir, net, card)
        (Path(out_dir) / "fedavg_history.json").write_text(json.dumps(history, indent=1))
    return FedAvgResult(net, card, history)


def fedavg_main(grid: Grid, run_config: Mapping[str, object]) -> Path:
    """The ServerApp's ``train-labeller`` task: FedAvg, then export to ``labeller-out-dir``.

    Run-config keys: ``labeller-resolution-px``, ``labeller-classes`` (comma-separated;
    "" = every NIH label), ``rounds``, ``local-epochs``, ``seed``, ``max-update-norm``
    (> 0 turns DP on), ``noise-multiplier``, ``num-resamples``, ``labeller-out-dir``.
    """
    config: Any = run_config
    names = [n.strip() for n in str(config.get("labeller-classes", "")).split(",") if n.strip()]
    cfg = LabellerConfig.model_validate(
        {
            "resolution_px": int(config.get("labeller-resolution-px", 32)),
            **({"class_names": names} if names else {}),
        }
    )
    norm = float(config.get("max-update-norm", 0.0))
    settings = FedAvgSettings(
        labeller_config=cfg,
        rounds=int(config.get("rounds", 5)),
        local_epochs=int(config.get("local-epochs", 1)),
        recipe=TrainRecipe(seed=int(config.get("seed", 0))),
        max_update_norm=norm if norm > 0 else None,
        noise_multiplier=float(config.get("noise-multiplier", 0.0)),
        num_resamples=int(config.get("num-resamples", 1000)),
        timeout_s=float(config.get("timeout-s", 3600.0)),
    )
    out = Path(str(config.get("labeller-out-dir") or config.get("out-dir") or "federated-labeller"))
    fedavg_labeller(grid, settings, out_dir=out)
    return out
