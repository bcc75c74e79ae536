"""The site's handler of ``train.labeller``: one FedAvg round of labeller training on real data.

    reply = train_labeller_task(message.content, cache, site_id="a")

The hub sends the global labeller (``train.weights``) and the round's settings
(``train.request``, :class:`LabellerRoundRequest`). The site trains it for
``local_epochs`` on its real train split — masked weighted BCE over the labels it
annotated, the labeller's augmentation — and replies with its updated weights and
counts. With ``dp`` set, the site bounds what its reply can reveal before it leaves:
the update ``Δ = w_local - w_global`` (every float tensor, BatchNorm statistics
included) is clipped to L2 norm ``max_update_norm`` and Gaussian noise of standard
deviation ``noise_multiplier · max_update_norm`` is added to every coordinate
(DP-FedAvg, McMahan et al. 2018, "Learning differentially private recurrent language
models"). The hub accounts the rounds (:func:`dp_epsilon`). Real images never leave.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import FederationError
from shared.evaluation_records import TrainRecipe
from shared.networks.labeller import Labeller, LabellerConfig
from site_node.data.cache import SiteCache
from site_node.evaluation.baseline import train_real_classifier_epochs, training_set
from site_node.evaluation.evaluate import annotated_labels

__all__ = [
    "METRICS_RECORD",
    "REQUEST_RECORD",
    "WEIGHTS_RECORD",
    "DPSetting",
    "LabellerRoundRequest",
    "clip_and_noise",
    "train_labeller_task",
]

log = logging.getLogger("radshare.site.flower")

REQUEST_RECORD = "train.request"
WEIGHTS_RECORD = "train.weights"
METRICS_RECORD = "train.metrics"


class DPSetting(BaseModel):
    """Clip each site's update to ``max_update_norm`` and add Gaussian noise (σ · norm)."""

    model_config = ConfigDict(extra="forbid")

    max_update_norm: float = Field(gt=0)
    noise_multiplier: float = Field(ge=0)


class LabellerRoundRequest(BaseModel):
    """One FedAvg round: the network config, local training settings, optional DP."""

    model_config = ConfigDict(extra="forbid")

    labeller_config: LabellerConfig
    round: int = Field(ge=0)
    local_epochs: int = Field(default=1, ge=1)
    recipe: TrainRecipe = Field(default_factory=lambda: TrainRecipe())
    dp: DPSetting | None = None


def clip_and_noise(
    delta: dict[str, torch.Tensor], dp: DPSetting, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], bool]:
    """Clip the concatenated update to ``max_update_norm``, add N(0, (σ·norm)²) per coordinate.

    Returns the noised update and whether clipping was needed.
    """
    norm = float(sum(float((t.double() ** 2).sum()) for t in delta.values())) ** 0.5
    scale = min(1.0, dp.max_update_norm / max(norm, 1e-12))
    std = dp.noise_multiplier * dp.max_update_norm
    noised = {
        k: t * scale + torch.randn(t.shape, generator=generator, dtype=t.dtype) * std
        for k, t in delta.items()
    }
    return noised, scale < 1.0


def _request(content: RecordDict) -> LabellerRoundRequest:
    try:
        text = str(content.config_records[REQUEST_RECORD]["json"])
        return LabellerRoundRequest.model_validate_json(text)
    except (KeyError, ValueError) as error:
        raise FederationError(f"train.labeller: invalid request: {error}") from error


def _global(content: RecordDict, cfg: LabellerConfig) -> Labeller:
    net = Labeller(cfg)
    try:
        net.load_state_dict(content.array_records[WEIGHTS_RECORD].to_torch_state_dict())
    except (KeyError, RuntimeError) as error:
        raise FederationError(f"train.labeller: no usable global weights: {error}") from error
    return net


def train_labeller_task(
    content: RecordDict, cache: SiteCache, *, site_id: str, site_labels: Sequence[str] | None = None
) -> RecordDict:
    """Answer one ``train.labeller`` round: updated weights (clipped and noised with DP), counts."""
    request = _request(content)
    cfg = request.labeller_config
    net = _global(content, cfg)
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    labels = annotated_labels(cache, site_labels)
    data, counts = training_set(cache, cfg, labels)
    recipe = request.recipe.model_copy(update={"seed": request.recipe.seed + request.round})
    loss = train_real_classifier_epochs(net, data, recipe, request.local_epochs)
    state, clipped = net.state_dict(), False
    if request.dp is not None:
        floats = {k: (state[k] - start[k]).double() for k in state if state[k].is_floating_point()}
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence().generate_state(1)[0])
        )
        noised, clipped = clip_and_noise(floats, request.dp, generator)
        state = {
            k: (start[k] + noised[k].to(start[k].dtype)) if k in noised else start[k] for k in state
        }
    metrics = MetricRecord(
        {
            "num_examples": counts["train_images"],
            "train_loss": float(loss),
            "clipped": int(clipped),
            "dp": int(request.dp is not None),
        }
    )
    log.info("train.labeller round %d at site %s: %d images", request.round, site_id, len(data))
    weights = ArrayRecord({k: v.detach().cpu() for k, v in state.items()})
    return RecordDict(
        {
            WEIGHTS_RECORD: weights,
            METRICS_RECORD: metrics,
            "train.meta": ConfigRecord({"site_id": site_id}),
        }
    )
