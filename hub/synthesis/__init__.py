"""Labelled synthetic archives from a published generator: Segal et al.'s Algorithm 1, batched.

``pipeline.synthesize`` runs it all: load the generator and labeller (``sources``), check
they fit, plan the patients (``targets``), optimise latents towards each patient's class
(``class_optimisation``), draw its follow-ups around the solution (``local_sampling``)
and write the NIH-layout archive with provenance, resume journal and manifest
(``archive``). ``radshare-hub synthesize`` is the command line over it.
"""

__all__ = ["archive", "class_optimisation", "local_sampling", "pipeline", "sources", "targets"]
