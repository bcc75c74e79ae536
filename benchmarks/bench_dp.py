"""Cost of a DP-SGD critic step relative to a non-private one, at 32², 64² and 128².

Non-private: the WGAN-GP critic loss on the batch (``critic_loss_terms``), one double
backward, an Adam step. Private: per-sample gradients of the same loss under
``vmap(grad(...))`` (``site_node.privacy.dp_critic``), written to ``p.grad_sample``,
then Opacus's DPOptimizer (clip, noise, Adam). The critic has no minibatch stddev in
both, so the two compute the same loss; random images stand in for data (the cost
does not depend on pixel values). Median of ``--steps`` timed steps after warm-up.
On CPU the time is this process's CPU time (``time.process_time``), so that other
work on a shared machine does not inflate it; use ``--threads 1`` to compare fairly.

    .venv/bin/python benchmarks/bench_dp.py                     # CPU: "cpu" profile critic
    python3 benchmarks/bench_dp.py --device cuda --network gpu  # GPU: the papers' critic
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shared.networks.generator import GeneratorConfig
from site_node.pggan.discriminator import Discriminator, DiscriminatorConfig
from site_node.pggan.losses import critic_loss_terms
from site_node.privacy.dp_critic import (
    active_parameter_names,
    make_dp_optimizer,
    only_trainable,
    per_sample_critic_grads,
    write_grad_samples,
)

NETWORKS = {"cpu": (2048, 128), "gpu": (8192, 512)}  # fmap_base, fmap_max (options.PROFILES)
BATCH_SIZES = {"cpu": {32: 16, 64: 16, 128: 8}, "gpu": {32: 128, 64: 64, 128: 32}}


def _critic(res_px: int, network: str, device: torch.device) -> Discriminator:
    fmap_base, fmap_max = NETWORKS[network]
    cfg = GeneratorConfig(resolution_px=res_px, fmap_base=fmap_base, fmap_max=fmap_max)
    return Discriminator(DiscriminatorConfig.mirror(cfg, use_minibatch_stddev=False)).to(device)


def _timed(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Median seconds of ``step`` over ``steps`` runs after ``warmup``."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    seconds = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = clock()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            seconds.append(clock() - started)
    return statistics.median(seconds)


def measure(res_px: int, batch_size: int, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per non-private and per private critic step at ``res_px``."""
    device = torch.device(args.device)
    res_log2 = res_px.bit_length() - 1
    g = torch.Generator(device=device).manual_seed(0)
    reals, fakes = (
        torch.rand(batch_size, 1, res_px, res_px, generator=g, device=device) * 2 - 1
        for _ in range(2)
    )
    eps = torch.rand(batch_size, 1, 1, 1, generator=g, device=device)

    D = _critic(res_px, args.network, device)
    adam = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))

    def plain_step() -> None:
        loss = critic_loss_terms(D, reals, fakes, eps, res_log2, 1.0)["loss"]
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()

    D_dp = _critic(res_px, args.network, device)
    dp_adam = make_dp_optimizer(
        torch.optim.Adam(D_dp.parameters(), lr=1e-3, betas=(0.0, 0.99)),
        noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=batch_size,
    )  # fmt: skip
    names = active_parameter_names(D_dp, res_log2, 1.0)

    def private_step() -> None:
        dp_adam.zero_grad(set_to_none=True)
        with only_trainable(D_dp, names):
            grads, _ = per_sample_critic_grads(D_dp, names, reals, fakes, eps, res_log2, 1.0)
            write_grad_samples(D_dp, grads)
            dp_adam.step()

    plain = _timed(plain_step, args.steps, args.warmup, device)
    private = _timed(private_step, args.steps, args.warmup, device)
    params = sum(p.numel() for n, p in D_dp.named_parameters() if n in names)
    return {"res_px": res_px, "batch_size": batch_size, "critic_params": params,
            "nondp_ms": plain * 1e3, "dp_ms": private * 1e3, "ratio": private / plain}  # fmt: skip


def max_diff_against_loop(res_px: int, args: argparse.Namespace, num_samples: int = 4) -> float:
    """Largest |per-sample gradient - per-example double-backward loop| on this device."""
    device = torch.device(args.device)
    res_log2 = res_px.bit_length() - 1
    g = torch.Generator(device=device).manual_seed(1)
    reals, fakes = (
        torch.rand(num_samples, 1, res_px, res_px, generator=g, device=device) * 2 - 1
        for _ in range(2)
    )
    eps = torch.rand(num_samples, 1, 1, 1, generator=g, device=device)
    D = _critic(res_px, args.network, device)
    names = active_parameter_names(D, res_log2, 0.5)
    grads, _ = per_sample_critic_grads(D, names, reals, fakes, eps, res_log2, 0.5)
    worst = 0.0
    for i in range(num_samples):
        D.zero_grad(set_to_none=True)
        one = slice(i, i + 1)
        critic_loss_terms(D, reals[one], fakes[one], eps[one], res_log2, 0.5)["loss"].backward()
        for name, p in D.named_parameters():
            if p.grad is not None:
                worst = max(worst, float((grads[name][i] - p.grad).abs().max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="cpu")
    parser.add_argument("--resolutions", type=int, nargs="*", default=[32, 64, 128])
    parser.add_argument("--batch-size", type=int, default=None, help="default: per resolution")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--check", action="store_true", help="also compare with a per-example loop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU ({torch.get_num_threads()} threads, process CPU time)"
    )
    print(f"DP critic step vs non-DP, {name}, torch {torch.__version__}, network {args.network}")
    print(
        f"{'res':>5} {'batch':>5} {'params':>10} {'non-DP ms':>10} {'DP ms':>10} {'DP/non-DP':>9}"
    )
    rows = []
    for res_px in args.resolutions:
        batch_size = args.batch_size or BATCH_SIZES[args.network][res_px]
        row = measure(res_px, batch_size, args)
        rows.append(row)
        print(
            f"{res_px:>4}² {batch_size:>5} {row['critic_params']:>10,} {row['nondp_ms']:>10.1f} "
            f"{row['dp_ms']:>10.1f} {row['ratio']:>8.2f}×",
            flush=True,
        )
    if args.check:
        for res_px in args.resolutions:
            worst = max_diff_against_loop(res_px, args)
            print(f"{res_px:>4}²: max |vmap per-sample - loop| = {worst:.2e}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"device": name, "network": args.network, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
