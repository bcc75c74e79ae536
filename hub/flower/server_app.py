"""The hub's Flower ServerApp: a thin shell that runs one federated task per ``flwr run``.

The run config's ``task`` picks it:

* ``audit`` → :func:`hub.flower.audit_server.audit_main`: send a published generator
  to the chosen sites as ``query.audit``; write one ``AuditReport`` per site and a
  readable report to ``out-dir``.
* ``evaluate`` → :func:`hub.flower.evaluate_server.evaluate_main`.
* ``train-labeller`` → :func:`hub.flower.fedavg_labeller.fedavg_main` (FedAvg, ``train.labeller``).

It waits up to ``wait-for-nodes-s`` seconds for ``expected-nodes`` SuperNodes first.
"""

from __future__ import annotations

import logging
import time

import torch  # ArrayRecord's torch conversions need torch imported first
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from shared.errors import ConfigError

__all__ = ["app"]

log = logging.getLogger("radshare.hub.flower")

app = ServerApp()
TASKS = ("audit", "evaluate", "train-labeller")


def _wait_for_nodes(grid: Grid, expected: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while len(list(grid.get_node_ids())) < expected and time.monotonic() < deadline:
        time.sleep(0.5)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the task named by ``run_config['task']``."""
    config = context.run_config
    task = str(config.get("task", "audit"))
    if task not in TASKS:
        raise ConfigError(f"run_config 'task': {task!r} is not one of {', '.join(TASKS)}")
    _wait_for_nodes(
        grid, int(config.get("expected-nodes", 0)), float(config.get("wait-for-nodes-s", 60))
    )  # type: ignore[arg-type, call-overload]
    log.info("hub: federated %s with torch %s", task, torch.__version__)
    if task == "audit":
        from hub.flower.audit_server import audit_main

        audit_main(grid, config)
    elif task == "evaluate":
        from hub.flower.evaluate_server import evaluate_main

        evaluate_main(grid, config)
    else:
        from hub.flower.fedavg_labeller import fedavg_main

        fedavg_main(grid, config)
