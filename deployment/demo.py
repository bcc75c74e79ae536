"""The one-command demo: a whole consortium on loopback, from no data to an HTML report.

    python -m deployment.demo                       # phantom data, cpu profile, demo-out/
    python -m deployment.demo --profile tiny --out /tmp/d
    python -m deployment.demo --data-a ../shared/data/cxr-site-a --data-b ../shared/data/cxr-site-b

One procedure (:func:`run_demo`); the sites' steps run side by side where the cores allow
(:func:`for_each_site`). Every step is a separate process (the verb a
hospital's IT or the consortium's operator would run) and records its completion in
``<out>/state.json``; running the demo again skips what is done and redoes the rest, so a
stopped demo resumes. Services (hub gRPC server, SuperLink, one SuperNode per site) are
started fresh on every run and stopped at the end. The report is written whatever
happened, each section saying what failed and why.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from deployment import hub_steps, site_steps
from deployment.commands import run_concurrently
from deployment.config import DemoConfig, DemoSite, load_config
from deployment.launcher import Consortium
from deployment.layout import DemoLayout
from deployment.report import write_demo_report
from deployment.site_steps import DemoContext
from deployment.state import DemoState, StepRecord
from shared.errors import ConfigError, RadshareError
from shared.fileio import atomic_write_text
from shared.locks import hold_exclusive_lock
from shared.logs import configure_logging
from shared.validation import field_error

__all__ = ["DemoOptions", "main", "run_demo"]

log = logging.getLogger("radshare.demo")

REPO_ROOT = Path(__file__).resolve().parent.parent


class DemoOptions:
    """How this invocation runs (not part of the resumable configuration)."""

    def __init__(self, *, fresh: bool = False, kill_site_during_audit: str | None = None):
        self.fresh = fresh
        self.kill_site_during_audit = kill_site_during_audit


def _fingerprint(config: DemoConfig) -> str:
    """What a resumed run must share with the first: everything but the output folder."""
    data = config.model_dump(mode="json", exclude={"out_dir"})
    data["settings"] = config.resolved_settings().model_dump(mode="json")
    return json.dumps(data, sort_keys=True)


def _write_json(path: Path, payload: object) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str))


def run_demo(config: DemoConfig, options: DemoOptions | None = None) -> int:
    """Run (or resume) the demo; returns 0 when every step is done, 1 otherwise."""
    options = options or DemoOptions()
    layout = DemoLayout(config.out_dir.resolve())
    started = time.monotonic()

    # Lay out the output folder: one demo at a time per folder; a fresh run starts from
    # nothing, a rerun resumes.
    lock = _lock(layout.out)
    if options.fresh and layout.out.exists():
        shutil.rmtree(layout.out)
    layout.logs.mkdir(parents=True, exist_ok=True)
    configure_logging("demo", file=layout.logs / "demo.log")
    state = DemoState(layout.state, _fingerprint(config))
    _write_json(layout.config, config.model_dump(mode="json"))
    ctx = DemoContext(config, config.resolved_settings(), layout)
    _limit_threads(ctx.settings.torch_threads)
    log.info("demo: profile %s, %d sites, output %s", config.profile, len(config.sites), layout.out)

    # Make the consortium's TLS material: a CA, the hub, one identity per site, operator.
    state.run("hub.certs", lambda _: hub_steps.make_certs(ctx))

    # Make or locate each site's data, ingest it into the site's private cache, make its keys.
    for index, site in enumerate(config.sites):
        _prepare_site(ctx, state, site, index)

    # Train each site's PGGAN and labeller, and audit the generator at the site; the sites
    # at once, as hospitals would (each step is a one-thread process on the cpu profile).
    for_each_site(ctx, lambda site: _train_site(ctx, state, site))

    # Start the consortium on loopback (on every run that still has work for it): hub,
    # SuperLink, one SuperNode per site; then the steps that need them.
    if _needs_services(ctx, state):
        _consortium_steps(ctx, state, options)

    # Write the report, whatever happened above, and say where it is.
    report = write_demo_report(ctx, state, elapsed_s=time.monotonic() - started)
    code = _finish(state, report, time.monotonic() - started)
    lock.close()
    return code


def for_each_site(ctx: DemoContext, action: Callable[[DemoSite], object]) -> None:
    """``action(site)`` for every site, as many at once as the cores allow (the sites'
    steps are independent processes, as in a real consortium)."""
    jobs = [functools.partial(action, site) for site in ctx.config.sites]
    run_concurrently(jobs, ctx.settings.torch_threads)


def _limit_threads(threads: int) -> None:
    """Every child process (steps and services) gets ``threads`` OMP/MKL threads, unless set."""
    if threads > 0:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(threads))


def _needs_services(ctx: DemoContext, state: DemoState) -> bool:
    """Whether a step that talks to the hub or the sites over the wire is not done yet."""
    steps = ["hub.federated-audit", "hub.federated-evaluate", "hub.pool", "hub.classifiers"]
    for site in ctx.config.sites:
        key = f"site.{site.site_id}"
        steps += [f"{key}.publish", f"{key}.publish-labeller", f"hub.pull.{site.site_id}"]
        steps += [f"hub.pull-labeller.{site.site_id}", f"hub.synthesize.{site.site_id}"]
    return not all(state.done(step) for step in steps)


def _consortium_steps(ctx: DemoContext, state: DemoState, options: DemoOptions) -> None:
    """Everything between starting the services and stopping them, in order."""
    config, layout = ctx.config, ctx.layout
    with Consortium(
        layout.services,
        tls_dir=layout.tls,
        hub_root=layout.registry,
        log_dir=layout.logs,
        host=config.host,
        flower_tls=config.flower_tls,
    ) as consortium:
        _start_services(ctx, state, consortium)

        # Publish each site's generator to the hub, then pull every one at the hub.
        for_each_site(ctx, lambda site: _publish_site(ctx, state, site, consortium))

        # Run the federated memorisation audit first: each site audits, only aggregates come
        # back, and the hub stores each site's signed report (its audit policy reads them).
        _federated(ctx, state, consortium, "audit", options.kill_site_during_audit)

        # Synthesise a labelled archive from every generator, through the hub's audit policy.
        for_each_site(ctx, lambda site: _synthesise(ctx, state, site, consortium))

        # Pool the archives and train classifiers: one per site's archive, one on the pool.
        _pool_and_train(ctx, state)

        # Evaluate every classifier federatedly on each site's real test split.
        _federated(ctx, state, consortium, "evaluate", None)


def _lock(out: Path) -> IO[str]:
    """Hold ``.<out>.lock`` beside the output folder while this demo runs (ConfigError if taken)."""
    return hold_exclusive_lock(
        out.parent / f".{out.name}.lock", f"{out}: another demo is running on this folder"
    )


def _step(
    state: DemoState, name: str, action: Callable[[], dict[str, Any]], needs: tuple[str, ...] = ()
) -> StepRecord:
    record = state.run(name, lambda _: action(), needs=needs)
    if record.status not in ("done",):
        log.warning("%s: %s: %s", name, record.status, (record.error or "").splitlines()[:1])
    return record


def _prepare_site(ctx: DemoContext, state: DemoState, site: DemoSite, index: int) -> None:
    key = f"site.{site.site_id}"
    _step(state, f"{key}.data", functools.partial(site_steps.make_data, ctx, site, index))
    data_dir = Path(state.outputs(f"{key}.data").get("data_dir", "."))
    _step(
        state,
        f"{key}.ingest",
        functools.partial(site_steps.ingest, ctx, site, data_dir),
        needs=(f"{key}.data",),
    )
    _step(state, f"{key}.keys", functools.partial(site_steps.make_keys, ctx, site), ("hub.certs",))


def _train_site(ctx: DemoContext, state: DemoState, site: DemoSite) -> None:
    key = f"site.{site.site_id}"
    _step(
        state,
        f"{key}.train",
        functools.partial(site_steps.train_pggan, ctx, site),
        (f"{key}.ingest",),
    )
    _step(
        state,
        f"{key}.labeller",
        functools.partial(site_steps.train_labeller, ctx, site),
        (f"{key}.ingest",),
    )
    _step(
        state,
        f"{key}.audit",
        functools.partial(site_steps.local_audit, ctx, site),
        (f"{key}.train",),
    )


def _consortium_keyring(ctx: DemoContext) -> Path:
    """The consortium keyring file the operator hands to the sites.

    Every site's key, and the hub's own (id ``hub``): the sites verify the classifiers the
    hub signs against it before they evaluate them.
    """
    from deployment.flower import write_consortium_keyring
    from hub.pooling.train import hub_signing_key
    from shared.artifacts.manifest import HUB_SITE_ID
    from shared.artifacts.signing import public_key_pem
    from shared.fileio import atomic_write_bytes

    keys = {
        s.site_id: ctx.site(s).signing_key.with_suffix(".ed25519.pub") for s in ctx.config.sites
    }
    hub_public = ctx.layout.hub / "keys" / "hub_signing.pub"
    hub_public.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        hub_public, public_key_pem(hub_signing_key(ctx.layout.hub_signing_key).public_key())
    )
    keys[HUB_SITE_ID] = hub_public
    return write_consortium_keyring(keys, ctx.layout.hub / "consortium-keyring.json")


def _node_config(ctx: DemoContext, site: DemoSite, hub_address: str) -> dict[str, object]:
    """What a site's SuperNode tells its ClientApp: its id, private folders, hub and keys.

    The site pulls the generator a federated audit names from the hub (its own TLS
    identity), verifies it against the consortium keyring and signs its report.
    """
    from deployment.flower import site_node_config

    paths = ctx.site(site)
    return site_node_config(
        site.site_id,
        cache_dir=paths.cache,
        work_dir=paths.root,
        hub=hub_address,
        tls_dir=paths.tls,
        keyring=ctx.layout.hub / "consortium-keyring.json",
        signing_key=paths.signing_key,
        pggan_run=str(paths.pggan_run),
        labeller_dir=str(paths.labeller_run / "export"),
    )


def _start_services(ctx: DemoContext, state: DemoState, consortium: Consortium) -> None:
    state.set("services", StepRecord(status="running"))
    started = time.monotonic()
    try:
        hub_address = consortium.start_hub()
        connection = consortium.start_superlink()
        _consortium_keyring(ctx)
        for site in ctx.config.sites:
            consortium.start_supernode(
                site.site_id, _node_config(ctx, site, hub_address), key_dir=ctx.site(site).keys
            )
        consortium.wait_for_nodes(len(ctx.config.sites))
    except Exception as error:
        state.set("services", StepRecord(status="failed", error=f"{type(error).__name__}: {error}"))
        log.error("services: %s", error)
        return
    outputs = {
        "hub": hub_address,
        "superlink": connection.address,
        "logs": {name: str(s.log_path) for name, s in consortium.services.items()},
    }
    state.set(
        "services",
        StepRecord(status="done", elapsed_s=time.monotonic() - started, outputs=outputs),
    )


def _publish_site(
    ctx: DemoContext, state: DemoState, site: DemoSite, consortium: Consortium
) -> None:
    key = f"site.{site.site_id}"
    hub_address = consortium.hub_address or ""
    _step(
        state,
        f"{key}.publish",
        lambda: site_steps.publish(ctx, site, hub_address, state.outputs(f"{key}.audit")),
        (f"{key}.train", "services"),
    )
    _step(
        state,
        f"{key}.publish-labeller",
        lambda: site_steps.publish_labeller(ctx, site, hub_address),
        (f"{key}.labeller", "services"),
    )
    _step(
        state,
        f"hub.pull-labeller.{site.site_id}",
        lambda: hub_steps.pull_bundle(
            ctx,
            hub_address,
            state.outputs(f"{key}.publish-labeller")["labeller_id"],
            ctx.layout.pulled(site.site_id, "labeller"),
        ),
        (f"{key}.publish-labeller", "services"),
    )
    _step(
        state,
        f"hub.pull.{site.site_id}",
        lambda: hub_steps.pull_bundle(
            ctx,
            hub_address,
            state.outputs(f"{key}.publish")["generator_id"],
            ctx.layout.pulled(site.site_id),
        ),
        (f"{key}.publish", "services"),
    )


def _synthesise(ctx: DemoContext, state: DemoState, site: DemoSite, consortium: Consortium) -> None:
    _step(
        state,
        f"hub.synthesize.{site.site_id}",
        lambda: hub_steps.synthesize(
            ctx,
            site,
            state.done(f"hub.pull-labeller.{site.site_id}"),
            state.outputs("hub.federated-audit"),
        ),
        (f"hub.pull.{site.site_id}", f"site.{site.site_id}.labeller"),
    )


def _federated(
    ctx: DemoContext,
    state: DemoState,
    consortium: Consortium,
    task: str,
    kill_site: str | None,
) -> None:
    if task == "audit":
        needs = ("services", *(f"hub.pull.{s.site_id}" for s in ctx.config.sites))
        state.run(
            "hub.federated-audit",
            lambda prior: hub_steps.federated_audit(ctx, consortium, REPO_ROOT, prior, kill_site),
            needs=needs,
        )
        return
    _step(
        state,
        "hub.federated-evaluate",
        lambda: hub_steps.federated_evaluate(
            ctx, consortium, REPO_ROOT, state.outputs("hub.classifiers").get("classifiers", {})
        ),
        ("services", "hub.classifiers"),
    )


def _pool_and_train(ctx: DemoContext, state: DemoState) -> None:
    archives = tuple(f"hub.synthesize.{s.site_id}" for s in ctx.config.sites)
    _step(state, "hub.pool", functools.partial(hub_steps.pool, ctx, state), archives)
    _step(
        state,
        "hub.classifiers",
        functools.partial(hub_steps.train_classifiers, ctx, state),
        ("hub.pool",),
    )


def _finish(state: DemoState, report: Path, elapsed_s: float) -> int:
    steps = state.steps()
    unfinished = {name: r.status for name, r in steps.items() if r.status != "done"}
    print(f"\nradshare demo: {len(steps) - len(unfinished)}/{len(steps)} steps done "
          f"in {elapsed_s / 60:.1f} min")  # fmt: skip
    for name, status in unfinished.items():
        print(f"  {status:8s} {name}: {(steps[name].error or '').splitlines()[0][:150]}")
    print(f"report: {report}")
    return 0 if not unfinished else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deployment.demo",
        description="The whole radshare consortium on loopback, from no data to an HTML report.",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (demo-out)")
    parser.add_argument("--config", type=Path, default=None, help="demo YAML (DemoConfig)")
    parser.add_argument("--profile", choices=("tiny", "cpu", "gpu"), default=None)
    parser.add_argument("--data-a", type=Path, default=None, help="site a: labels.csv + images/")
    parser.add_argument("--data-b", type=Path, default=None, help="site b: labels.csv + images/")
    parser.add_argument("--fresh", action="store_true", help="delete --out first (no resume)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of every random step (default 0): phantom "
        "data, training, synthesis; another seed is another run of the same demo",
    )
    parser.add_argument(
        "--insecure-flower", action="store_true", help="no TLS between Flower processes"
    )
    parser.add_argument(
        "--kill-site-during-audit",
        metavar="SITE",
        default=None,
        help="fault drill: SIGKILL this site's SuperNode once the federated audit runs",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> DemoConfig:
    """The demo configuration from the YAML file (if any) and the command line."""
    config = load_config(DemoConfig, args.config)
    updates: dict[str, Any] = {}
    if args.out is not None:
        updates["out_dir"] = args.out
    if args.profile is not None:
        updates["profile"] = args.profile
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.insecure_flower:
        updates["flower_tls"] = False
    sites = list(config.sites)
    for index, folder in enumerate((args.data_a, args.data_b)):
        if folder is not None and index < len(sites):
            sites[index] = sites[index].model_copy(update={"data_dir": folder.resolve()})
    updates["sites"] = sites
    try:
        return DemoConfig.model_validate({**config.model_dump(), **updates})
    except ValidationError as error:
        raise ConfigError(field_error(error, "command line", with_value=True)) from error


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """``python -m deployment.demo``: run or resume the demo; exit 1 if a step is not done."""
    args = _parse(argv)
    # SIGTERM stops like Ctrl+C: the running step is stopped, services are shut down, and
    # the step stays not done, so the next run redoes it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    options = DemoOptions(fresh=args.fresh, kill_site_during_audit=args.kill_site_during_audit)
    try:
        sys.exit(run_demo(build_config(args), options))
    except RadshareError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
