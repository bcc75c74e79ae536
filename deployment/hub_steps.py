"""What the hub does in the demo, one function per step, each a ``radshare-hub`` process
or a Flower run through the SuperLink.

Steps whose verb has not landed yet raise :class:`StepFailedError` saying so; the report then
shows that section as blocked with the reason.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from deployment.commands import StepFailedError, has_verb, run_command, run_concurrently
from deployment.flower import FlowerConnection, run_app
from deployment.site_steps import DemoContext

log = logging.getLogger("radshare.deployment.demo")

__all__ = [
    "FLOWER_APP_CANDIDATES",
    "federated_audit",
    "federated_evaluate",
    "federated_task",
    "find_flower_app",
    "make_certs",
    "pool",
    "pull_bundle",
    "require_verb",
    "run_hub",
    "synthesize",
    "train_classifiers",
]

#: Where the hub's Flower app (ServerApp + ClientApp, one pyproject.toml) may live.
FLOWER_APP_CANDIDATES = ("hub/flower/app", "hub/flower", "site_node/flower/app", "flower_app")


def run_hub(ctx: DemoContext, what: str, argv: list[str], timeout_s: float = 3600.0) -> list[str]:
    """Run a hub verb tagged ``hub``; returns its last output lines."""
    return run_command(
        "hub", argv, log_dir=ctx.layout.logs, what=f"hub: {what}", timeout_s=timeout_s
    )


def require_verb(program: str, verb: str, owner: str) -> None:
    """StepFailedError naming the missing verb and the component that owns it."""
    if not has_verb(program, verb):
        raise StepFailedError(f"`{program} {verb}` does not exist yet (component: {owner})")


def make_certs(ctx: DemoContext) -> dict[str, Any]:
    """The consortium's TLS material: CA, hub server, one identity per site, operator, auditor."""
    identities = [f"site:{s.site_id}" for s in ctx.config.sites] + ["operator", "auditor"]
    argv = ["radshare-hub", "certs", "--out", str(ctx.layout.tls)]
    for identity in identities:
        argv += ["-i", identity]
    run_hub(ctx, "TLS material", argv)
    return {"tls_dir": str(ctx.layout.tls), "identities": identities}


def pull_bundle(ctx: DemoContext, hub_address: str, artifact_id: str, out: Path) -> dict[str, Any]:
    """Pull one bundle (hashes and signature verified) into ``out`` as the operator."""
    if not (out / "manifest.json").is_file():
        if out.exists():
            import shutil

            shutil.rmtree(out)
        argv = ["radshare-hub", "pull", artifact_id, "--out", str(out), "--hub", hub_address]
        argv += ["--tls-dir", str(ctx.layout.tls), "--identity", "operator"]
        argv += ["--hub-root", str(ctx.layout.registry)]  # verified against the hub's keyring
        run_hub(ctx, f"pull {artifact_id[:12]}", argv)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"bundle": str(out), "manifest": manifest}


def find_flower_app(repo_root: Path) -> Path:
    """The Flower app folder (with a pyproject.toml naming serverapp and clientapp)."""
    for candidate in FLOWER_APP_CANDIDATES:
        folder = repo_root / candidate
        if (folder / "pyproject.toml").is_file():
            return folder
    raise StepFailedError(
        "no Flower app folder yet (looked for pyproject.toml in "
        f"{', '.join(FLOWER_APP_CANDIDATES)}; components: site_node/flower + hub/flower)"
    )


def federated_task(
    ctx: DemoContext,
    connection: FlowerConnection,
    app_dir: Path,
    *,
    name: str,
    run_config: dict[str, object],
    on_running: Any = None,
) -> dict[str, Any]:
    """Submit one federated task (``flwr run``) and wait for it; its status and log.

    ``on_running()`` is called at each poll once the run is running (fault drills).
    """
    import logging

    log = logging.getLogger("radshare.deployment.demo")

    last_logged: dict[str, Any] = {"status": "", "at_s": 0.0}

    def progress(elapsed_s: float, status: str) -> None:
        if status != last_logged["status"] or elapsed_s - float(last_logged["at_s"]) >= 30.0:
            log.info("hub: federated %s: %s after %.0f s", name, status, elapsed_s)
            last_logged.update(status=status, at_s=elapsed_s)
        if on_running is not None and status.startswith("running"):
            on_running()

    run = run_app(
        connection,
        app_dir,
        run_config=run_config,
        log_path=ctx.layout.logs / f"serverapp-{name}.log",
        timeout_s=ctx.settings.federated_timeout_s,
        on_poll=progress,
    )
    if not run.completed:
        raise StepFailedError(
            f"federated {name}: run {run.run_id} ended {run.status} (log {run.log_path})"
        )
    return {"run_id": run.run_id, "status": run.status, "elapsed_s": round(run.elapsed_s, 1)}


def synthesize(
    ctx: DemoContext, site: Any, labeller_pulled: bool, audit: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A labelled synthetic archive (NIH layout) from one site's generator and labeller.

    The generator is the bundle the hub pulled (signature verified); so is the labeller
    when its publication worked. Otherwise the labeller is read from the site's export
    (a shortcut only a one-machine demo can take; the output records it and the failed
    publish step keeps the demo from reporting success).

    Synthesis goes through the hub's audit policy (the registry under the hub's root):
    the site's federated audit (``audit``: the federated-audit step's outputs) must have
    answered. Where it flagged the generator, the demo says so and overrides with a
    reason, which the registry records and the archive's manifest shows.
    """
    require_verb("radshare-hub", "synthesize", "hub/synthesis")
    result = (audit or {}).get("sites", {}).get(site.site_id, {})
    if "passed" not in result:
        raise StepFailedError(
            f"no federated audit of site {site.site_id}'s generator yet; the hub's audit policy "
            "refuses synthesis before it (run the demo again)"
        )
    out = ctx.layout.archive(site.site_id)
    labeller = (
        ctx.layout.pulled(site.site_id, "labeller")
        if labeller_pulled
        else ctx.site(site).labeller_run / "export"
    )
    argv = ["radshare-hub", "synthesize", "--generator", str(ctx.layout.pulled(site.site_id))]
    argv += ["--labeller", str(labeller), "--out", str(out)]
    argv += ["--size", str(ctx.settings.archive_images_per_site)]
    argv += ["--seed", str(ctx.config.seed), "--device", _device(ctx)]
    argv += ["--hub-root", str(ctx.layout.registry)]  # bundles verified against its keyring
    if not labeller_pulled:
        argv.append("--trust-local-export")  # the one-machine demo's shortcut, said out loud
    if not result["passed"]:  # the audit policy would refuse; the demo says so and overrides
        import logging

        logging.getLogger("radshare.deployment.demo").warning(
            "hub: site %s's generator was flagged by its federated audit; synthesizing with "
            "an override (recorded in the registry and the archive's manifest)",
            site.site_id,
        )
        argv += ["--override-audit", _DEMO_OVERRIDE]
    if ctx.settings.synthesis == "unlabelled":
        argv.append("--unlabelled")
    else:
        steps = ctx.settings.synthesis_max_steps
        argv += ["--max-steps", str(steps), "--plateau-steps", str(max(5, steps // 5))]
    run_hub(ctx, f"synthesize archive of site {site.site_id}", argv)
    source = "pulled bundle" if labeller_pulled else "site export (labeller not published)"
    return {
        "archive": str(out),
        "labeller": str(labeller),
        "labeller_source": source,
        "audit_override": None if result["passed"] else _DEMO_OVERRIDE,
    }


#: The reason the demo gives when it synthesizes from a generator its audit flagged.
_DEMO_OVERRIDE = "demo walkthrough at demo settings: the federated audit flagged this generator"


def _device(ctx: DemoContext) -> str:
    return {"cpu": "cpu", "gpu": "cuda", "auto": "auto"}[ctx.settings.accelerator]


def pool(ctx: DemoContext, state: Any) -> dict[str, Any]:
    """Pool every site's archive (union label space, per-site masks, counts)."""
    require_verb("radshare-hub", "pool", "hub/pooling")
    out = ctx.layout.hub / "pool"
    if out.exists():  # an interrupted attempt
        import shutil

        shutil.rmtree(out)
    argv = ["radshare-hub", "pool", "--out", str(out), "--seed", str(ctx.config.seed)]
    argv += ["--hub-root", str(ctx.layout.registry)]  # the audit policy checks each generator
    overridden = False
    for site in ctx.config.sites:
        synthesized = state.outputs(f"hub.synthesize.{site.site_id}")
        argv += ["--archive", f"{site.site_id}={synthesized['archive']}"]
        overridden = overridden or bool(synthesized.get("audit_override"))
    if overridden:  # an archive synthesized under an override needs one to be pooled, too
        argv += ["--override-audit", _DEMO_OVERRIDE]
    run_hub(ctx, "pool archives", argv)
    return {"pool": str(out)}


def train_classifiers(ctx: DemoContext, state: Any) -> dict[str, Any]:
    """One classifier per site's archive and one on the pool (synthetic images only)."""
    require_verb("radshare-hub", "train-classifier", "hub/pooling")
    s = ctx.settings
    runs: dict[str, str] = dict(state.outputs("hub.classifiers").get("classifiers", {}))
    sources = {
        site.site_id: state.outputs(f"hub.synthesize.{site.site_id}")["archive"]
        for site in ctx.config.sites
    }
    sources["pooled"] = state.outputs("hub.pool")["pool"]
    empty: dict[str, str] = {}
    jobs = []
    for name, archive in sources.items():
        out = ctx.layout.hub / "classifiers" / name
        if (out / "bundle" / "manifest.json").is_file():
            runs[name] = str(out)
            continue
        patients = _archive_patients(Path(archive))
        if 0 <= patients < 2:  # class optimisation kept (almost) no patient
            empty[name] = (
                f"{archive}: the archive holds {patients} synthetic patient(s); a classifier "
                "needs at least 2 (one for validation), so none is trained"
            )
            log.warning("hub: no classifier on %s: %d patient(s) in its archive", name, patients)
            continue
        argv = ["radshare-hub", "train-classifier", "--archive", archive, "--out", str(out)]
        argv += ["--hub-key", str(ctx.layout.hub_signing_key)]  # the hub's key, in the keyring
        argv += ["--max-epochs", str(s.classifier_epochs), "--seed", str(ctx.config.seed)]
        argv += ["--lr", str(s.classifier_lr)]
        argv += ["--resolution-px", str(s.pggan_resolution_px), "--accelerator", s.accelerator]
        if s.classifier_small_network:
            argv.append("--small-network")
        if name != "pooled":
            argv += ["--site-id", name]
        jobs.append(functools.partial(run_hub, ctx, f"train classifier on {name}", argv))
        runs[name] = str(out)
    run_concurrently(jobs, s.torch_threads)
    if not runs:
        raise StepFailedError("no archive holds 2 synthetic patients: " + "; ".join(empty.values()))
    return {"classifiers": runs, **({"not_trained": empty} if empty else {})}


def _archive_patients(archive: Path) -> int:
    """Patients in an archive's (or pool's) labels CSV; -1 when it has none."""
    import csv

    tables = [archive / "Data_Entry.csv", archive / "Data_Entry_pool.csv"]
    table = next((t for t in tables if t.is_file()), None)
    if table is None:
        return -1
    with table.open(newline="") as handle:
        return len({row["Patient ID"] for row in csv.DictReader(handle)})


def federated_audit(
    ctx: DemoContext,
    consortium: Any,
    repo_root: Path,
    prior: dict[str, Any],
    kill_site: str | None,
) -> dict[str, Any]:
    """Audit each site's generator at that site (``query.audit``), one Flower run per site.

    Sites already audited (in ``prior``) are kept; a site whose SuperNode does not answer
    is recorded as unavailable and the step is partial, so a rerun audits only it.
    ``kill_site`` (fault drill) SIGKILLs that site's SuperNode once the first run is running.
    """
    app_dir, connection = find_flower_app(repo_root), consortium.connection
    if connection is None:
        raise StepFailedError("the SuperLink is not running")
    sites: dict[str, Any] = dict(prior.get("sites", {}))
    drill = {"pending": kill_site}
    for site in ctx.config.sites:
        if isinstance(sites.get(site.site_id), dict) and "histogram" in sites[site.site_id]:
            continue
        out = ctx.layout.federated / "audit" / site.site_id
        from deployment.flower import registered_generator_run_config

        run_config: dict[str, object] = {
            "task": "audit",  # named by registry id: the site pulls and verifies it itself
            **registered_generator_run_config(ctx.layout.pulled(site.site_id)),
            "keyring": str(ctx.layout.hub / "consortium-keyring.json"),
            "sites": site.site_id,
            "num-samples": ctx.settings.audit_num_generated,
            "seed": ctx.config.seed,
            "num-permutations": 999,
            "expected-nodes": _alive_nodes(consortium),
            "timeout-s": int(max(30.0, ctx.settings.federated_timeout_s - 60.0)),
            "out-dir": str(out),
        }
        try:
            federated_task(
                ctx, connection, app_dir, name=f"audit-{site.site_id}", run_config=run_config,
                on_running=lambda: _drill(consortium, drill),
            )  # fmt: skip
        except StepFailedError as error:
            sites[site.site_id] = {"unavailable": str(error)[:300]}
            continue
        sites[site.site_id] = _audit_result(out, site.site_id)
        if "report" in sites[site.site_id]:
            sites[site.site_id]["stored_at_hub"] = _store_report(ctx, consortium, out)
    missing = [s for s, v in sites.items() if "histogram" not in v]
    outputs: dict[str, Any] = {"sites": sites}
    if missing:
        outputs["_partial"] = f"unavailable: {', '.join(missing)} (run the demo again)"
    return outputs


def _store_report(ctx: DemoContext, consortium: Any, out: Path) -> bool:
    """Store the site's AuditReport at the hub (operator identity), where auditors read it."""
    from hub.audit.report import read_signed_audit_reports, upload_audit_reports
    from shared.hub_client import ClientTLS, HubClient

    tls = ClientTLS.from_dir(ctx.layout.tls, "operator")
    with HubClient(consortium.hub_address, tls) as client:
        stored = upload_audit_reports(client, read_signed_audit_reports(out))
    return bool(stored)


def _alive_nodes(consortium: Any) -> int:
    return sum(
        1 for name, s in consortium.services.items() if name.startswith("supernode") and s.alive()
    )


def _drill(consortium: Any, drill: dict[str, str | None]) -> None:
    site = drill.get("pending")
    if site:
        import logging

        logging.getLogger("radshare.deployment.demo").warning(
            "fault drill: killing site %s's SuperNode during the federated audit", site
        )
        consortium.kill(f"supernode-{site}")
        drill["pending"] = None


def _audit_result(out: Path, site_id: str) -> dict[str, Any]:
    """The site's audit numbers from ``<out>/reports/<site>.json``, or why there are none."""
    path = out / "reports" / f"{site_id}.json"
    if not path.is_file():
        page = out / "report.md"
        why = page.read_text()[-300:] if page.is_file() else "no report written"
        return {"unavailable": f"site {site_id} did not answer: {why}"}
    summary = json.loads(path.read_text())["summary"]
    return {
        "histogram": summary["best_ssim_histogram"],
        "passed": summary["verdict"]["passed"],
        "near_copies": summary["near_copy_count"],
        "permutation_p_ssim": summary["ssim_test"].get("permutation_p_value"),
        "report": str(path),
    }


def federated_evaluate(
    ctx: DemoContext, consortium: Any, repo_root: Path, classifiers: dict[str, str]
) -> dict[str, Any]:
    """Evaluate every classifier on each site's real test split (``radshare-hub evaluate``).

    ``classifiers``: name (a site id or ``pooled``) → training run folder (its ``bundle/``).
    Each site also trains a real-data baseline at home (setting a of the comparison).
    """
    require_verb("radshare-hub", "evaluate", "hub/evaluation")
    app_dir, connection = find_flower_app(repo_root), consortium.connection
    if connection is None:
        raise StepFailedError("the SuperLink is not running")
    out = ctx.layout.federated / "evaluate"
    argv = ["radshare-hub", "evaluate", "--out", str(out), "--sites", "all"]
    for name, run in classifiers.items():
        tag = name if name == "pooled" else f"synthetic:{name}"
        argv += ["--classifier", f"{tag}={Path(run) / 'bundle'}"]
    argv += ["--real-baseline", "--epochs", str(ctx.settings.classifier_epochs)]
    argv += ["--lr", str(ctx.settings.classifier_lr)]
    argv += ["--resamples", str(ctx.settings.evaluation_resamples), "--app-dir", str(app_dir)]
    # registered at the hub first (operator); each site pulls and verifies them itself
    argv += ["--hub", str(consortium.hub_address), "--tls-dir", str(consortium.tls_dir)]
    argv += ["--keyring", str(ctx.layout.hub / "consortium-keyring.json")]
    argv += ["--superlink", connection.name, "--flwr-home", str(connection.flwr_home)]
    run_hub(ctx, "federated evaluation", argv, timeout_s=ctx.settings.federated_timeout_s * 3)
    table = out / "comparison.csv"
    if not table.is_file():
        raise StepFailedError(f"federated evaluation wrote no {table}")
    outputs: dict[str, Any] = {"table": _comparison_rows(table), "report": str(out / "report.html")}
    answered = {row[1] for row in outputs["table"]["rows"]}
    missing = [s.site_id for s in ctx.config.sites if s.site_id not in answered]
    if missing:  # a site that did not answer: the next run evaluates again
        outputs["_partial"] = (
            f"no evaluation from site(s) {', '.join(missing)} (run the demo again)"
        )
    return outputs


def _comparison_rows(path: Path) -> dict[str, Any]:
    """``comparison.csv`` as header + rows for the report: AUC with its CI, counts."""
    import csv

    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = ["setting", "site", "label", "n_pos", "n_neg", "auc", "auc 95% CI"]
    table = []
    for row in rows:
        auc, low, high = (row.get(k, "") for k in ("auc", "auc_low", "auc_high"))
        ci = f"{float(low):.3f}–{float(high):.3f}" if low and high else ""
        value: object = round(float(auc), 3) if auc else f"– ({row.get('threshold_source', '')})"
        table.append(
            [row["setting"], row["site"], row["label"], row["n_pos"], row["n_neg"], value, ci]
        )
    return {"columns": columns, "rows": table}
