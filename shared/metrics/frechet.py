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

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "frechet_distance_matrix",
]


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


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix by eigendecomposition (negative round-off clipped)."""
    values, vectors = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_matrix(stats: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Pairwise Fréchet distances ``[K, K]`` between K Gaussians ``(mu, sigma)``, in float64.

    Uses ``Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}``: the inner matrix is
    symmetric PSD, so its trace root is the sum of the square roots of its (clipped)
    eigenvalues. One ``eigh`` per set and one ``eigvalsh`` per pair, instead of a
    general ``sqrtm`` per pair; it agrees with :func:`frechet_distance` to round-off
    (a test checks it) and needs no ``eps`` for singular covariances.
    """
    roots = [_psd_sqrt(sigma) for _, sigma in stats]
    size = len(stats)
    matrix = np.zeros((size, size))
    for i in range(size):
        mu_i, sigma_i = stats[i]
        for j in range(i + 1, size):
            mu_j, sigma_j = stats[j]
            inner = roots[i] @ sigma_j @ roots[i]
            tr_covmean = np.sqrt(
                np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)
            ).sum()
            diff = np.asarray(mu_i, np.float64) - np.asarray(mu_j, np.float64)
            value = diff @ diff + np.trace(sigma_i) + np.trace(sigma_j) - 2 * tr_covmean
            matrix[i, j] = matrix[j, i] = max(float(value), 0.0)
    return matrix
