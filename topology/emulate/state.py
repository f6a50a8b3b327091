"""The state file: the plan of a live (or half-built, or crashed) emulated cluster.

It is written before anything is created, so `down` after any crash knows every name that can
exist and removes exactly those. One file per prefix, in DISTNET_EMULATE_DIR (default
/run/distnet-emulate: tmpfs, gone with the machine, as the namespaces are).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from distnet.common.errors import UserError
from topology.emulate.plan import Plan

DEFAULT_DIR = "/run/distnet-emulate"


def state_dir() -> Path:
    return Path(os.environ.get("DISTNET_EMULATE_DIR", DEFAULT_DIR))


def state_path(prefix: str) -> Path:
    return state_dir() / f"{prefix.rstrip('-')}.json"


def work_dir(prefix: str) -> Path:
    """Agent script, hostfile and run files of one cluster."""
    return state_dir() / prefix.rstrip("-")


def save(plan: Plan, extra: dict | None = None) -> Path:
    path = state_path(plan.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"plan": plan.to_json(), **(extra or {})}, indent=1))
    os.replace(tmp, path)  # atomic: a crash never leaves half a state file
    return path


def load(prefix: str) -> tuple[Plan, dict]:
    path = state_path(prefix)
    try:
        data = json.loads(path.read_text())
        return Plan.from_json(data.pop("plan")), data
    except FileNotFoundError:
        raise UserError(f"emulate: no cluster with prefix {prefix!r} ({path} missing); "
                        "run `python -m topology emulate up` first") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"emulate: state file {path} is damaged ({exc})") from None


def used_mgmt_subnets() -> set[str]:
    """Management subnets of every recorded cluster (any prefix)."""
    out = set()
    for p in state_dir().glob("*.json"):
        try:
            out.add(json.loads(p.read_text())["plan"]["mgmt_subnet"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out
