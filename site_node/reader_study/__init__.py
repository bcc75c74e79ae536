"""The reader study kit: real-versus-synthetic studies built, served and scored at the site.

It shows real images, so it runs inside the hospital. ``build`` writes a static
HTML+JS study in Segal et al.'s designs (grids of six, real/synthetic pairs) or
Han et al.'s (single images in random order); ``serve`` serves it on loopback
and appends the readers' answers to ``answers.csv``; ``score`` computes
accuracy, sensitivity, specificity, HYPE∞ with its CI and Fleiss' kappa.
"""

__all__: list[str] = []
