"""Federated evaluation at the site: a classifier on the real test split, aggregates only.

``metrics`` (AUC, sensitivity, specificity and their vectorised bootstrap CIs),
``evaluate`` (a classifier on one split of the cache → ``SiteEvaluation``) and
``baseline`` (the real-only classifier (a), trained here; Han et al.'s rare-class variants).
"""

from site_node.evaluation.baseline import train_real_classifier, training_set
from site_node.evaluation.evaluate import annotated_labels, evaluate_classifier
from site_node.evaluation.metrics import bootstrap_auc_sens_spec

__all__ = [
    "annotated_labels",
    "bootstrap_auc_sens_spec",
    "evaluate_classifier",
    "train_real_classifier",
    "training_set",
]
