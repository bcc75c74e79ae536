"""Feature extractors for Fréchet distances: a registry, a default rule and a per-image-set cache.

Every extractor maps uint8 grey images ``[N, H, W]`` (the on-disk contract) to
float64 features ``[N, D]`` and has a ``fingerprint`` that changes whenever its
features would::

    "inception"    FID Inception-v3, 2048-d, from a weights file the user supplies
                   (pytorch-fid's or torch-fidelity's 2015-12-05 file; same keys)
    "labeller"     the labeller's penultimate features (``labeller.embed``): the domain default
    "random-conv"  a fixed, seeded random conv net (mean and std of its last maps), 256-d:
                   the last resort when neither weights nor a labeller exist

:func:`default_extractor` applies the rule of the quality report: Inception when
weights are given, else the labeller, else random-conv (with a warning, since
its distances are comparable only with each other). :func:`extract_features`
caches features per image set under ``<cache>/<sha256>.npy``, keyed by the
extractor's fingerprint and the images' bytes.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import ConfigError
from shared.fileio import atomic_open

__all__ = [
    "EXTRACTORS",
    "FeatureExtractor",
    "InceptionExtractor",
    "LabellerExtractor",
    "RandomConvExtractor",
    "default_extractor",
    "extract_features",
    "images_fingerprint",
    "make_extractor",
    "register_extractor",
    "to_uint8",
]

log = logging.getLogger("radshare.metrics")


class FeatureExtractor(Protocol):
    """uint8 ``[N, H, W]`` → float64 ``[N, feature_dim]``."""

    name: str
    feature_dim: int
    fingerprint: str

    def __call__(self, images_u8: np.ndarray) -> np.ndarray: ...


EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {}


def register_extractor(name: str) -> Callable:
    """Class or factory decorator: make ``name`` available to :func:`make_extractor`."""

    def decorate(factory: Callable[..., FeatureExtractor]) -> Callable[..., FeatureExtractor]:
        EXTRACTORS[name] = factory
        return factory

    return decorate


def make_extractor(name: str, **options) -> FeatureExtractor:
    """Build the registered extractor ``name``; ConfigError lists the valid names."""
    if name not in EXTRACTORS:
        close = difflib.get_close_matches(name, list(EXTRACTORS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"feature extractor {name!r}{hint}; valid: {', '.join(sorted(EXTRACTORS))}"
        )
    return EXTRACTORS[name](**options)


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Network images ``[N, 1, H, W]`` in [-1, 1] → uint8 ``[N, H, W]``, as a PNG stores them."""
    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim == 4:
        x = x[:, 0]
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def _tensor_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _as_batch(images_u8: np.ndarray) -> torch.Tensor:
    array = np.asarray(images_u8)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise ConfigError(f"images must be uint8 [N, H, W], got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


@register_extractor("inception")
class InceptionExtractor:
    """FID Inception-v3 pool features; ``resize`` = ``"pytorch-fid"`` or ``"torch-fidelity"``."""

    name = "inception"
    feature_dim = 2048

    def __init__(self, weights_path: Path | str, resize: str = "pytorch-fid", device: str = "cpu"):
        from shared.metrics.inception import load_fid_inception

        self.model = load_fid_inception(weights_path).to(device)
        self.resize, self.device = resize, device
        self.fingerprint = f"inception:{resize}:{_tensor_digest(self.model)}"

    @torch.no_grad()
    def __call__(self, images_u8: np.ndarray) -> np.ndarray:
        from shared.metrics.inception import preprocess_for_inception

        x = preprocess_for_inception(_as_batch(images_u8), self.resize).to(self.device)
        return self.model(x).double().cpu().numpy()


@register_extractor("labeller")
class LabellerExtractor:
    """The labeller's penultimate features: ``labeller.embed(x)`` on ``[N, 1, R, R]`` in [-1, 1]."""

    name = "labeller"

    def __init__(self, labeller: nn.Module, input_px: int | None = None, device: str = "cpu"):
        if not hasattr(labeller, "embed"):
            raise ConfigError(f"labeller {type(labeller).__name__} has no embed() method")
        self.labeller = labeller.eval().to(device)
        self.input_px, self.device = input_px, device
        self.feature_dim = int(getattr(labeller, "feature_dim", 0) or 0)
        self.fingerprint = f"labeller:{input_px}:{_tensor_digest(labeller)}"

    @torch.no_grad()
    def __call__(self, images_u8: np.ndarray) -> np.ndarray:
        x = _as_batch(images_u8).float().unsqueeze(1).div(127.5).sub(1.0).to(self.device)
        if self.input_px and x.shape[-1] != self.input_px:
            x = F.interpolate(x, size=(self.input_px,) * 2, mode="bilinear", antialias=True)
        embedded = self.labeller.embed(x)  # type: ignore[operator]
        return embedded.flatten(1).double().cpu().numpy()


@register_extractor("random-conv")
class RandomConvExtractor:
    """A fixed random conv net (seeded numpy weights) at 64 px: mean and std of 128 last maps."""

    name = "random-conv"
    feature_dim = 256
    input_px = 64
    channels = (1, 16, 32, 64, 128)

    def __init__(self, seed: int = 0, device: str = "cpu"):
        rng = np.random.default_rng(seed)
        self.weights = []
        for c_in, c_out in zip(self.channels[:-1], self.channels[1:], strict=True):
            w = rng.normal(0.0, np.sqrt(2.0 / (9 * c_in)), (c_out, c_in, 3, 3))
            self.weights.append(torch.from_numpy(w.astype(np.float32)).to(device))
        self.device = device
        self.fingerprint = f"random-conv:v1:{seed}"

    @torch.no_grad()
    def __call__(self, images_u8: np.ndarray) -> np.ndarray:
        x = _as_batch(images_u8).float().unsqueeze(1).div(127.5).sub(1.0).to(self.device)
        x = F.interpolate(x, size=(self.input_px,) * 2, mode="bilinear", antialias=True)
        for weight in self.weights:
            x = F.leaky_relu(F.conv2d(x, weight, stride=2, padding=1), 0.2)
        flat = x.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1)], 1).double().cpu().numpy()


def default_extractor(
    inception_weights: Path | str | None = None,
    labeller: nn.Module | None = None,
    labeller_input_px: int | None = None,
    device: str = "cpu",
    inception_resize: str = "pytorch-fid",
) -> FeatureExtractor:
    """Inception if weights are given, else the labeller, else random-conv (logged as a warning)."""
    if inception_weights is not None:
        return make_extractor(
            "inception", weights_path=inception_weights, resize=inception_resize, device=device
        )
    if labeller is not None:
        return make_extractor(
            "labeller", labeller=labeller, input_px=labeller_input_px, device=device
        )
    log.warning("no Inception weights and no labeller: Fréchet distances use random-conv features")
    return make_extractor("random-conv", device=device)


def images_fingerprint(images_u8: np.ndarray, chunk_rows: int = 256) -> str:
    """sha256 of an image set's shape, dtype and bytes (read in chunks: works on memmaps)."""
    digest = hashlib.sha256(f"{images_u8.shape}:{images_u8.dtype}".encode())
    for start in range(0, len(images_u8), chunk_rows):
        digest.update(np.ascontiguousarray(images_u8[start : start + chunk_rows]).tobytes())
    return digest.hexdigest()


def extract_features(
    extractor: FeatureExtractor,
    images_u8: np.ndarray,
    *,
    batch_size: int = 64,
    cache_dir: Path | str | None = None,
) -> np.ndarray:
    """Features ``[N, D]`` of uint8 images ``[N, H, W]``; cached per image set in ``cache_dir``."""
    if len(images_u8) == 0:
        raise ConfigError("extract_features: the image set is empty")
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{extractor.fingerprint}|{images_fingerprint(images_u8)}".encode())
        path = Path(cache_dir) / f"{key.hexdigest()}.npy"
        if path.is_file():
            return np.load(path, allow_pickle=False)
    features = np.concatenate(
        [
            extractor(np.asarray(images_u8[i : i + batch_size]))
            for i in range(0, len(images_u8), batch_size)
        ]
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as handle:
            np.save(handle, features, allow_pickle=False)  # plain arrays only: never unpickle
    return features
