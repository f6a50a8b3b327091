"""Network specs as one string, for command lines: "kind:key=value,key=value".

    fat-tree:k=8
    clos:pods=4,tors=8,hosts=16,aggs=4,cores=8,oversub=3      (oversub = ToR oversubscription,
                                              agg_oversub = agg's; both default 1, non-blocking)
    leaf-spine:leaves=8,spines=4,hosts=16[,oversub=3]        (oversub=none: uplinks at link_gbps)
    custom:path/to/net.json

Every kind also takes link_gbps, link_latency_s, switch_latency_s, host_gbps; keyword overrides
given to parse_network win over the string. Errors name the offending part.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from distnet.common.errors import UserError
from topology import builders
from topology.network import Network

_COMMON = {"link_gbps": float, "link_latency_s": float, "switch_latency_s": float,
           "host_gbps": float}
# kind -> (builder, {spec key: (builder argument, type)}, required keys)
_KINDS: dict[str, tuple[Callable[..., Network], dict[str, tuple[str, type]], tuple[str, ...]]] = {
    "fat-tree": (builders.fat_tree, {"k": ("k", int)}, ("k",)),
    "clos": (
        builders.clos,
        {
            "pods": ("pods", int),
            "tors": ("tors_per_pod", int),
            "hosts": ("hosts_per_tor", int),
            "aggs": ("aggs_per_pod", int),
            "cores": ("cores", int),
            "oversub": ("tor_oversub", float),
            "agg_oversub": ("agg_oversub", float),
        },
        ("pods", "tors", "hosts", "aggs", "cores"),
    ),
    "leaf-spine": (
        builders.leaf_spine,
        {
            "leaves": ("leaves", int),
            "spines": ("spines", int),
            "hosts": ("hosts_per_leaf", int),
            "oversub": ("oversub", float),
        },
        ("leaves", "spines", "hosts"),
    ),
}
KINDS = (*_KINDS, "custom")


def _number(kind: str, key: str, text: str, typ: type) -> int | float | None:
    if typ is float and key.endswith("oversub") and text.lower() == "none":
        return None  # keep the per-tier link speed for the uplinks
    what = "an integer" if typ is int else "a finite number"
    try:
        value = typ(text)
    except ValueError:
        raise UserError(f"network spec {kind}: {key}={text!r} is not {what}") from None
    if typ is float and not math.isfinite(value):
        raise UserError(f"network spec {kind}: {key}={text!r} is not {what}")
    return value


def parse_network(spec: str, **overrides: float | None) -> Network:
    """Build the network a spec string describes; overrides (e.g. link_gbps=100) win."""
    unknown = set(overrides) - set(_COMMON)
    if unknown:
        raise UserError(f"network spec: unknown override(s) {sorted(unknown)}")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().replace("_", "-")
    if kind in ("fattree", "fat"):
        kind = "fat-tree"
    if kind == "custom":
        if not rest.strip():
            raise UserError("network spec custom: give a JSON path, e.g. custom:net.json")
        kw = {k: v for k, v in overrides.items() if v is not None and k != "host_gbps"}
        return builders.custom(rest.strip(), **kw)
    if kind not in _KINDS:
        raise UserError(f"unknown network kind {kind!r} in {spec!r} (known: {', '.join(KINDS)})")
    if not sep:
        raise UserError(f"network spec {spec!r}: expected {kind}:key=value,...")
    builder, keys, required = _KINDS[kind]
    args: dict[str, object] = {}
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, text = (s.strip() for s in part.partition("="))
        if not eq or not text:
            raise UserError(f"network spec {kind}: {part!r} is not key=value")
        if key in seen:
            raise UserError(f"network spec {kind}: {key} given twice")
        seen.add(key)
        if key in keys:
            arg, typ = keys[key]
            args[arg] = _number(kind, key, text, typ)
        elif key in _COMMON:
            args[key] = _number(kind, key, text, float)
        else:
            known = ", ".join([*keys, *_COMMON])
            raise UserError(f"network spec {kind}: unknown key {key!r} (known: {known})")
    missing = [k for k in required if k not in seen]
    if missing:
        raise UserError(f"network spec {kind}: missing {', '.join(missing)}")
    args.update({k: v for k, v in overrides.items() if v is not None})
    return builder(**args)
