"""Fréchet distance between two Gaussians fitted to feature sets (Heusel et al. 2017).

    FD = ||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

Computed in float64; the matrix square root is taken with ``scipy.linalg.sqrtm``,
with the usual safeguards of pytorch-fid: a small ``eps * I`` is added to both
covariances when the product is singular, and a tiny imaginary part from
round-off is dropped (a large one is an error).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_features"]


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (unbiased, rows = samples) in float64."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = (
        np.atleast_2d(sigma1).astype(np.float64),
        np.atleast_2d(sigma2).astype(np.float64),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets ``[N, D]``."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
