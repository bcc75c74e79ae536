"""How real people run radshare: the one-command demo, a loopback launcher, configs, containers.

Modules: ``demo`` (the orchestrator, ``python -m deployment.demo``), ``launcher`` (hub,
SuperLink and SuperNodes as real processes on loopback), ``processes`` (child processes
with tagged logs), ``flower`` (SuperNode keys, ``flwr`` connection and runs), ``config``
(pydantic models of the YAML files in ``configs/``), ``state`` (the demo's resumable
record), ``layout`` (its folders), ``site_steps`` / ``hub_steps`` (one function per step),
``commands`` (a step as a process),
``report`` (the HTML report). Container files, systemd units and guides live beside them.
"""

__all__ = [
    "commands",
    "config",
    "demo",
    "flower",
    "hub_steps",
    "launcher",
    "layout",
    "processes",
    "report",
    "site_steps",
    "state",
    "tasks",
]
