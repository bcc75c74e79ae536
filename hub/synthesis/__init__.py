"""Labelled synthetic archives from a published generator: Segal et al.'s Algorithm 1, batched.

``pipeline.synthesize`` runs it all: load the generator and labeller (``sources``), check
they fit, plan the patients (``targets``; ``joint_labels`` for match-site label
vectors), optimise latents towards each patient's labels (``class_optimisation``), draw
its follow-ups around the solution (``local_sampling``) and write the NIH-layout archive
with provenance, resume journal, ``prevalence.json`` (``prevalence``) and manifest
(``archive``). ``radshare-hub synthesize`` is the command line over it.
"""

__all__ = [
    "archive",
    "class_optimisation",
    "joint_labels",
    "local_sampling",
    "pipeline",
    "prevalence",
    "sources",
    "targets",
]
