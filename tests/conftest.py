"""Shared fixtures: the real sample data (skipped with a reason when absent), small threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The team's real chest X-rays (``RADSHARE_SAMPLE_DATA``); CI always sets it."""
    root = os.environ.get("RADSHARE_SAMPLE_DATA")
    if not root:
        pytest.skip("RADSHARE_SAMPLE_DATA is unset: real-data tests need ../shared/data")
    path = Path(root).resolve()  # relative paths break in tests that change folders
    if not (path / "cxr-site-a" / "labels.csv").is_file():
        pytest.skip(f"RADSHARE_SAMPLE_DATA={root} has no cxr-site-a/labels.csv")
    return path


@pytest.fixture(scope="session")
def site_a(sample_data: Path) -> Path:
    """Real NIH ChestX-ray14 images of site A (adults)."""
    return sample_data / "cxr-site-a"


@pytest.fixture(scope="session")
def site_b(sample_data: Path) -> Path:
    """Real Guangzhou paediatric images of site B."""
    return sample_data / "cxr-site-b"


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a module: deterministic, and on a busy shared 2-core
    machine far faster (two OpenMP threads ran 10-40x slower). Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
