"""PGGAN throughput: training steps and generation, images/s per resolution.

Training: one step exactly as ``PGGANModule.training_step`` does it (n_critic = 1):
G(z) without grad → WGAN-GP critic loss (double backward for the penalty) → Adam on D;
G(z) → -D(G(z)) with D frozen → Adam on G; the G_ema update. Stabilise phase (alpha = 1)
at each resolution; reals are random tensors already on the device (data loading and
Lightning's bookkeeping are not timed). Batch sizes: Han et al.'s per resolution unless
``--batch-sizes``. Generation: ``G_ema(z)`` under ``no_grad`` at ``--gen-batch``.

Full-size PGGAN (fmap_base 8192, fmap_max 512, z 512) by default; ``--small`` uses the
tiny profile's widths. fp32 always; bf16 autocast too on CUDA. Full size at the papers'
batch sizes is a GPU workload: on 2 CPU threads one step at 32 px (batch 128) took over 100 s,
so on a CPU use ``--small`` (or ``--batch-sizes``). Examples::

    python benchmarks/bench_pggan.py                        # CPU: 32, 64, 128 px, few steps
    python benchmarks/bench_pggan.py --small
    python benchmarks/bench_pggan.py --resolutions 64,128,256,1024 --steps 20   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Callable

import torch

from shared.networks.generator import Generator, GeneratorConfig
from site_node.pggan.discriminator import Discriminator, DiscriminatorConfig
from site_node.pggan.losses import critic_loss_terms, generator_loss
from site_node.pggan.schedule import DEFAULT_BATCH_SIZES, parse_batch_sizes

FULL = {"fmap_base": 8192, "fmap_max": 512, "z_dim": 512}
SMALL = {"fmap_base": 256, "fmap_max": 32, "z_dim": 64}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _timed(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _networks(res_px: int, widths: dict[str, int], device: torch.device):
    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution_px=res_px, **widths)
    G = Generator(cfg).to(device)
    D = Discriminator(DiscriminatorConfig.mirror(cfg)).to(device)
    G_ema = Generator(cfg).to(device).requires_grad_(False).eval()
    return G, D, G_ema


def train_step_fn(res_px: int, batch_size: int, widths, device, precision) -> Callable[[], None]:
    """One PGGAN training step at ``res_px`` (stabilise phase), as a closure."""
    G, D, G_ema = _networks(res_px, widths, device)
    res_log2 = int(math.log2(res_px))
    adam = {"lr": 1e-3, "betas": (0.0, 0.99), "eps": 1e-8}
    opt_G, opt_D = (
        torch.optim.Adam(G.parameters(), **adam),
        torch.optim.Adam(D.parameters(), **adam),
    )
    reals = torch.rand(batch_size, 1, res_px, res_px, device=device) * 2 - 1

    def step() -> None:
        z = torch.randn(2, batch_size, G.z_dim, device=device)
        eps = torch.rand(batch_size, 1, 1, 1, device=device)
        with _autocast(device, precision):
            with torch.no_grad():
                fakes = G.synthesize(z[0], res_log2, 1.0)
            loss_D = critic_loss_terms(D, reals, fakes, eps, res_log2, 1.0)["loss"]
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        D.requires_grad_(False)
        with _autocast(device, precision):
            loss_G = generator_loss(D, G.synthesize(z[1], res_log2, 1.0), res_log2, 1.0)
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        D.requires_grad_(True)
        opt_G.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                p_ema.lerp_(p, 0.001)

    return step


def generate_fn(res_px: int, batch_size: int, widths, device, precision) -> Callable[[], None]:
    """One ``G_ema(z)`` batch at ``res_px``, as a closure."""
    _, _, G_ema = _networks(res_px, widths, device)

    @torch.no_grad()
    def step() -> None:
        z = torch.randn(batch_size, G_ema.z_dim, device=device)
        with _autocast(device, precision):
            G_ema(z)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolutions", default=None, help="comma-separated px; default by device")
    parser.add_argument("--small", action="store_true", help="tiny-profile widths, not full size")
    parser.add_argument("--batch-sizes", default="", help="RES:SIZE overrides, e.g. 1024:8")
    parser.add_argument("--gen-batch", type=int, default=64, help="generation batch size")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 2, CUDA 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (CPU 1, CUDA 5)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--no-train", action="store_true", help="generation only")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    default_res = "64,128,256,1024" if cuda else "32,64,128"
    resolutions = [int(r) for r in (args.resolutions or default_res).split(",")]
    batch_sizes = {**DEFAULT_BATCH_SIZES, **parse_batch_sizes(args.batch_sizes)}
    steps, warmup = args.steps or (20 if cuda else 2), args.warmup or (5 if cuda else 1)
    widths = SMALL if args.small else FULL
    precisions = ["fp32", "bf16"] if cuda else ["fp32"]
    if cuda:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"# PGGAN throughput on {name}; widths {widths}; torch {torch.__version__}")
    print(f"# {warmup} warm-up + {steps} timed steps; images/s (higher is better)\n")
    print(
        "| res px | train batch | train fp32 img/s | train bf16 img/s "
        "| gen batch | gen fp32 img/s | gen bf16 img/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for res_px in resolutions:
        batch = batch_sizes[res_px]
        row = [str(res_px), str(batch)]
        for precision in ["fp32", "bf16"]:
            if args.no_train or precision not in precisions:
                row.append("—")
                continue
            seconds = _timed(
                train_step_fn(res_px, batch, widths, device, precision), warmup, steps, device
            )
            row.append(f"{batch / seconds:,.1f}")
        row.append(str(args.gen_batch))
        for precision in ["fp32", "bf16"]:
            if precision not in precisions:
                row.append("—")
                continue
            seconds = _timed(
                generate_fn(res_px, args.gen_batch, widths, device, precision),
                warmup,
                steps,
                device,
            )
            row.append(f"{args.gen_batch / seconds:,.1f}")
        print("| " + " | ".join(row) + " |", flush=True)
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
