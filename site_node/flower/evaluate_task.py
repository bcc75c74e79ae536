"""The site's handler of ``evaluate.classifier``: a pure function from message content to reply.

    reply = evaluate_classifier_task(message.content, cache, site_id="a")

Request (:class:`~shared.evaluation_records.EvaluationRequest` as JSON in the ConfigRecord
``evaluate.request``):

* ``mode="evaluate"``: the registered classifier the request names (``classifier_id``,
  ``weights_sha256``), pulled and verified by the ClientApp
  (``site_node.flower.registered``) and passed in as ``classifier`` with its card's
  thresholds, is evaluated on the site's real ``request.split``; only the federated
  labeller's validation round sends a state dict inline (ArrayRecord
  ``evaluate.classifier``), which the ClientApp accepts only when the site takes part
  in that training;
* ``mode="train-real"``: a classifier of that config is first trained here on the real
  train split (baseline (a); with ``rare_class`` Han et al.'s Fig. 4B variants, the
  ``synthetic`` one adding the images of the ArrayRecord ``evaluate.enrich``), then
  evaluated the same way. Its weights never leave.

The reply holds aggregates only (:func:`~shared.evaluation_records.evaluation_to_records`).
The ClientApp registers this as ``@app.evaluate("classifier")``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from flwr.app import RecordDict

from shared.errors import FederationError
from shared.evaluation_records import (
    CLASSIFIER_RECORD,
    ENRICH_RECORD,
    REQUEST_RECORD,
    EvaluationRequest,
    evaluation_to_records,
)
from shared.networks.labeller import Labeller
from site_node.data.cache import SiteCache
from site_node.evaluation.baseline import train_real_classifier, training_set
from site_node.evaluation.evaluate import annotated_labels, evaluate_classifier

__all__ = ["evaluate_classifier_task", "parse_request"]

log = logging.getLogger("radshare.site.flower")


def parse_request(content: RecordDict) -> EvaluationRequest:
    """The request of an ``evaluate.classifier`` message; FederationError if malformed."""
    if REQUEST_RECORD not in content.config_records:
        raise FederationError(f"evaluate.classifier: no ConfigRecord {REQUEST_RECORD!r}")
    try:
        return EvaluationRequest.model_validate_json(
            str(content.config_records[REQUEST_RECORD]["json"])
        )
    except (KeyError, ValueError) as error:
        raise FederationError(f"evaluate.classifier: invalid request: {error}") from error


def _received_classifier(content: RecordDict, request: EvaluationRequest) -> Labeller:
    if CLASSIFIER_RECORD not in content.array_records:
        raise FederationError(
            f"evaluate.classifier: mode 'evaluate' needs ArrayRecord {CLASSIFIER_RECORD!r}"
        )
    net = Labeller(request.labeller_config)
    try:
        net.load_state_dict(content.array_records[CLASSIFIER_RECORD].to_torch_state_dict())
    except RuntimeError as error:
        raise FederationError(
            f"evaluate.classifier: weights do not fit the config: {error}"
        ) from error
    return net.eval()


def _enrichment(
    content: RecordDict, request: EvaluationRequest
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    rare = request.rare_class
    if rare is None or rare.strategy != "synthetic":
        return None
    if ENRICH_RECORD not in content.array_records:
        raise FederationError(
            f"rare_class strategy 'synthetic' needs ArrayRecord {ENRICH_RECORD!r}"
        )
    arrays = content.array_records[ENRICH_RECORD]
    images, labels, mask = (arrays[k].numpy() for k in ("images", "labels", "mask"))
    r = request.labeller_config.resolution_px
    if images.dtype != np.uint8 or images.shape[1:] != (r, r):
        raise FederationError(
            f"enrichment images must be uint8 [N, {r}, {r}], got {images.dtype} {images.shape}"
        )
    return images, labels.astype(np.float32), mask.astype(np.float32)


def evaluate_classifier_task(
    content: RecordDict,
    cache: SiteCache,
    *,
    site_id: str,
    site_labels: Sequence[str] | None = None,
    classifier: tuple[Labeller, dict[str, float | None]] | None = None,
) -> RecordDict:
    """Answer one ``evaluate.classifier`` message with aggregate records.

    ``classifier``: the verified registered classifier and its thresholds (mode
    ``evaluate``); None: the state dict sent inline (federated-labeller validation).
    """
    request = parse_request(content)
    if classifier is not None:
        request = request.model_copy(
            update={
                "labeller_config": classifier[0].cfg,
                "fallback_thresholds_logit": classifier[1],
            }
        )
    if request.sites and site_id not in request.sites:
        raise FederationError(f"site {site_id!r} is not among the sites asked: {request.sites}")
    labels = annotated_labels(cache, site_labels)
    training: dict[str, int] = {}
    if request.mode == "evaluate":
        net = classifier[0] if classifier else _received_classifier(content, request)
    else:
        data, training = training_set(
            cache,
            request.labeller_config,
            labels,
            request.rare_class,
            _enrichment(content, request),
        )
        net = train_real_classifier(cache, request.labeller_config, request.recipe, data, labels)
    evaluation = evaluate_classifier(
        net, cache, request, site_id=site_id, site_labels=labels, training=training
    )
    log.info(
        "evaluate.classifier %r (%s): %d classes answered",
        request.tag,
        request.mode,
        len(evaluation.classes),
    )
    return evaluation_to_records(evaluation)
