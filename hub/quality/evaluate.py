"""The quality evaluation in one procedure: load, extract features, run the analyses, report.

``evaluate_quality`` writes into a new folder::

    <out>/report.html     every table and plot (self-contained)
    <out>/results.json    the numbers
    <out>/transitions/    one GIF per optimised class (when a generator is given)

What runs depends on what is given: the Segal analyses need the real set (and
the synthetic set for real-vs-synthetic); prevalence needs a labeller and both
sets; the Han analyses need a generator and a labeller. The real set is a
site's own data: run this where the data may be read (at the site, or on
public data).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from hub.quality import han, prevalence, segal
from hub.quality.imageset import ImageSet, load_nih_folder
from hub.quality.report import Section, write_report
from shared.artifacts.keyring import SignerKeys
from shared.errors import ArtifactError, ConfigError
from shared.fileio import atomic_write_text
from shared.metrics.features import default_extractor, extract_features
from shared.metrics.frechet import frechet_distance_from_features
from shared.networks.generator import Generator, GeneratorConfig

__all__ = ["QualityOptions", "evaluate_quality", "load_generator_export"]

log = logging.getLogger("radshare.quality")


@dataclass
class QualityOptions:
    """Inputs and knobs of one evaluation (the CLI fills it)."""

    out_dir: Path
    real_dir: Path | None = None
    synthetic_dir: Path | None = None
    resolution_px: int = 64
    inception_weights: Path | None = None
    inception_resize: str = "pytorch-fid"
    labeller_dir: Path | None = None
    generator_dir: Path | None = None
    feature_cache: Path | None = None
    max_images: int | None = None
    min_class_images: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    num_resamples: int = 10_000
    han_latents: int = 4
    han_steps: int = 20
    han_classes: list[str] = field(default_factory=list)
    trusted: SignerKeys | None = None  # --keyring: verifies labeller/generator bundles
    trust_local_export: bool = False  # --trust-local-export: accept unsigned training exports


def load_generator_export(folder: Path) -> Generator:
    """A generator from a folder with one ``*.safetensors`` and a JSON with ``generator_config``."""
    weights = sorted(folder.glob("*.safetensors"))
    configs = [
        p for p in sorted(folder.glob("*.json")) if "generator_config" in json.loads(p.read_text())
    ]
    if len(weights) != 1 or not configs:
        raise ArtifactError(f"{folder}: need one *.safetensors and a JSON with generator_config")
    cfg = GeneratorConfig(**json.loads(configs[0].read_text())["generator_config"])
    G = Generator(cfg)
    G.load_state_dict(load_file(str(weights[0])))
    return G.eval().requires_grad_(False)


def _load_generator(opts: QualityOptions) -> Generator:
    """A bundle (verified against ``opts.trusted``) or, with ``trust_local_export``, an export."""
    assert opts.generator_dir is not None
    if (opts.generator_dir / "manifest.json").is_file():
        from shared.artifacts.generator import load_generator

        if opts.trusted is None:
            raise ConfigError(f"{opts.generator_dir}: a signed bundle; pass --keyring to verify it")
        return load_generator(opts.generator_dir, opts.trusted)
    if not opts.trust_local_export:
        raise ArtifactError(
            f"{opts.generator_dir}: an unsigned training export; pass --trust-local-export "
            "to use it, or give the signed bundle"
        )
    return load_generator_export(opts.generator_dir)


def _segal_section(
    real: ImageSet, synthetic: ImageSet | None, feats: dict, opts: QualityOptions, results: dict
) -> Section:
    section = Section("Fréchet distances (Segal et al.)")
    f_real = feats["real"]
    zero = segal.zero_measure(f_real, real.labels, real.patient_ids, opts.seeds)
    rows: list[list[object]] = [
        ["Stratified halves (zero measure), mean over seeds", float(np.mean(zero))]
    ]
    results["zero_measure"] = zero
    if real.sex is not None and {"M", "F"} <= set(real.sex):
        results["sex_split"] = segal.sex_distance(f_real, real.sex)
        rows.append(["Sex (M vs F)", results["sex_split"]])
    if synthetic is not None:
        results["real_vs_synthetic"] = frechet_distance_from_features(f_real, feats["synthetic"])
        rows.append(["Real vs synthetic", results["real_vs_synthetic"]])
    classes = segal.class_distance_matrix(
        f_real, real.labels, real.label_space, opts.min_class_images
    )
    results["class_matrix"] = {
        "names": classes.names,
        "counts": classes.counts,
        "fd": classes.matrix.tolist(),
    }
    if "No Finding" in classes.names:
        to_nf = classes.to_baseline("No Finding")
        results["class_to_no_finding"] = to_nf
        rows += [
            [f"{name} vs No Finding (n={n})", to_nf[name]]
            for name, n in zip(classes.names, classes.counts, strict=True)
            if name != "No Finding"
        ]
    section.paragraphs.append(
        f"Features: {feats['extractor']}. "
        f"Zero measure per seed: {', '.join(f'{z:.3f}' for z in zero)}. "
        f"Classes with fewer than {opts.min_class_images} images are left out."
    )
    section.tables.append(
        ("Fréchet distance per split (Segal et al. Table 1)", ["split", "FD"], rows)
    )
    section.tables.append(
        (
            "Pairwise class FD",
            ["", *classes.names],
            [[n, *row] for n, row in zip(classes.names, classes.matrix.tolist(), strict=True)],
        )
    )
    section.figures += [
        ("MDS of the class FD matrix", segal.plot_mds(classes)),
        ("Hierarchical clustering of the classes", segal.plot_dendrogram(classes)),
    ]
    return section


def _prevalence_section(
    sets: dict[str, ImageSet], labeller, card, opts: QualityOptions, results: dict
) -> Section:
    names = list(card.labeller_config.class_names)
    thresholds = [card.thresholds_logit[n] for n in names]
    px = card.labeller_config.resolution_px
    cis = {}
    for key, image_set in sets.items():
        images = _at_resolution(image_set.images_u8, px)
        cis[key] = prevalence.prevalence_ci(
            prevalence.predict_labels(labeller, images, thresholds), opts.num_resamples
        )
        results[f"prevalence_{key}"] = {
            n: [float(e), float(lo), float(hi)]
            for n, e, lo, hi in zip(
                names, cis[key].estimate, cis[key].low, cis[key].high, strict=True
            )
        }
    section = Section("Label prevalence (Segal et al. Fig. 6)")
    section.paragraphs.append(
        f"One labeller for both sets; 95% percentile bootstrap CIs, {opts.num_resamples} resamples."
    )
    section.figures.append(
        (
            "Prevalence, real vs synthetic",
            prevalence.plot_prevalence(names, cis["real"], cis["synthetic"]),
        )
    )
    return section


def _at_resolution(images_u8: np.ndarray, px: int) -> np.ndarray:
    if images_u8.shape[-1] == px:
        return images_u8
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).float().unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(px, px), mode="bilinear", antialias=True)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def _han_section(G: Generator, labeller, card, opts: QualityOptions, results: dict) -> Section:
    names = list(card.labeller_config.class_names)
    targets = opts.han_classes or [n for n in names if n != "No Finding"]
    generator = torch.Generator().manual_seed(opts.seeds[0])
    z0 = torch.randn(opts.han_latents, G.z_dim, generator=generator)
    section = Section("Pathology correlations, transitions and difference maps (Han et al.)")
    (opts.out_dir / "transitions").mkdir(exist_ok=True)
    score_paths = []
    for name in targets:
        images, scores = han.record_optimisation_path(
            G, labeller, z0, names.index(name), opts.han_steps
        )
        score_paths.append(scores)
        frames = han.transition_frames(images[:, 0], num_frames=6)
        han.save_gif(
            han.transition_frames(images[:, 0], num_frames=opts.han_steps + 1),
            opts.out_dir / "transitions" / f"{name}.gif",
        )
        overlay = han.overlay_difference(
            images[0, 0], han.difference_map(images[0, 0], images[-1, 0])
        )
        section.figures += [
            (f"{name}: transition", np.concatenate(list(frames), axis=1)),
            (f"{name}: end − start (red brighter, blue darker)", overlay),
        ]
    matrix = han.correlation_from_paths(score_paths)
    results["pathology_correlation"] = {
        "rows": targets,
        "cols": names,
        "r": np.nan_to_num(matrix).tolist(),
    }
    section.paragraphs.append(
        f"{opts.han_latents} latents optimised {opts.han_steps} Adam steps towards each class; "
        "dose = fraction of the path. GIFs in transitions/."
    )
    section.figures.insert(
        0,
        (
            "Pearson r: optimised class vs labeller score",
            han.plot_correlation_heatmap(matrix, targets, names),
        ),
    )
    return section


def evaluate_quality(opts: QualityOptions) -> dict:
    """Run every analysis the inputs allow; write report.html and results.json."""
    # Start a new output folder.
    if opts.out_dir.exists():
        raise ConfigError(f"{opts.out_dir}: already exists (reports are never overwritten)")
    opts.out_dir.mkdir(parents=True)
    results: dict = {}
    sections: list[Section] = []

    # Load the image sets and the networks given.
    sets: dict[str, ImageSet] = {}
    for key, folder in (("real", opts.real_dir), ("synthetic", opts.synthetic_dir)):
        if folder is not None:
            sets[key] = load_nih_folder(
                folder, opts.resolution_px, name=key, max_images=opts.max_images
            )
    labeller = card = None
    if opts.labeller_dir is not None:
        from hub.synthesis.sources import resolve_labeller

        source = resolve_labeller(
            str(opts.labeller_dir),
            trusted=opts.trusted,
            trust_local_export=opts.trust_local_export,
        )
        labeller, card = source.labeller, source.card

    # Extract features with one extractor for every set (cached per image set).
    extractor = default_extractor(
        opts.inception_weights,
        labeller,
        card.labeller_config.resolution_px if card else None,
        inception_resize=opts.inception_resize,
    )
    feats: dict = {"extractor": extractor.fingerprint}
    for key, image_set in sets.items():
        feats[key] = extract_features(extractor, image_set.images_u8, cache_dir=opts.feature_cache)
    results["extractor"] = extractor.fingerprint

    # Segal et al.: zero measure, class distances, real vs synthetic.
    if "real" in sets:
        sections.append(_segal_section(sets["real"], sets.get("synthetic"), feats, opts, results))

    # Segal et al.: label prevalence by one labeller.
    if labeller is not None and len(sets) == 2:
        sections.append(_prevalence_section(sets, labeller, card, opts, results))

    # Han et al.: correlation matrix, transitions, difference maps.
    if labeller is not None and opts.generator_dir is not None:
        G = _load_generator(opts)
        sections.append(_han_section(G, labeller.requires_grad_(False), card, opts, results))

    # Write the numbers and the report.
    atomic_write_text(opts.out_dir / "results.json", json.dumps(results, indent=2))
    write_report(opts.out_dir / "report.html", "radshare quality report", sections)
    log.info("quality report written to %s", opts.out_dir)
    return results
