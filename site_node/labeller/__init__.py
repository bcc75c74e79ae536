"""Labeller training at the site: a DenseNet-121 multi-label classifier for class optimisation.

The network itself lives in :mod:`shared.networks.labeller` (it may be published);
this package holds what must stay at the site: the data, the Lightning module, the
training procedure and the evaluation on the site's real validation and test splits.
"""

from site_node.labeller.metrics import ClassEvaluation, evaluate_classes
from site_node.labeller.train import LabellerTrainOptions, train_labeller

__all__ = ["ClassEvaluation", "LabellerTrainOptions", "evaluate_classes", "train_labeller"]
