"""Procedural phantom chest radiographs: the demo's embedded data and a test fixture.

Not a substitute for real data. Each phantom is drawn from closed-form anatomy
(lungs with vessel trees, mediastinum and heart, diaphragm domes, ribs, clavicles,
spine, soft tissue, a laterality marker), label-dependent findings for the NIH
label space, and a per-image acquisition (view, pose, exposure, noise, blur) in
the manner of a :class:`HospitalStyle`. Sites are written in the NIH layout::

    from site_node.phantom import make_phantom_site, render_phantom
    csv_path = make_phantom_site("data/phantom-a", num_images=1000, style="hospital-a", seed=0)
    image = render_phantom(["Cardiomegaly"], np.random.default_rng(0), "hospital-b", 256)

Modules: ``style`` (hospital presets), ``anatomy`` (shape numbers and curves),
``scene`` (frame and density layers), ``chest`` (normal anatomy), ``findings``
(per-label renderers), ``overlay`` (frames and burned-in text), ``render`` (one
image), ``series`` (patients and follow-ups), ``writer`` (the site folder).
"""

from site_node.phantom.findings import FINDING_RENDERERS, Finding
from site_node.phantom.render import render_phantom
from site_node.phantom.style import STYLE_PRESETS, HospitalStyle, get_style
from site_node.phantom.writer import NIH_HEADER, make_phantom_site

__all__ = [
    "FINDING_RENDERERS",
    "NIH_HEADER",
    "STYLE_PRESETS",
    "Finding",
    "HospitalStyle",
    "get_style",
    "make_phantom_site",
    "render_phantom",
]
