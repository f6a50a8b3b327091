"""Network topologies and a simulator for all-reduce schedules on them (pure Python + NumPy).

Imports only the all-reduce schedules, registry and cost model from `distnet.allreduce`, never the
trainer.
Networks: builders (fat_tree, clos, leaf_spine, custom), spec strings (parse_network), link
failures (fail_links, fail_random); routing (route: ecmp, ideal, dmodk); placement (place);
reports (info, info_text, scaling_table).
"""

from topology.builders import clos, custom, fat_tree, leaf_spine
from topology.network import Network, fail_links, fail_random, make_network
from topology.placement import place
from topology.report import info, info_text, scaling_table, scaling_text
from topology.routing import MODES, Routes, route
from topology.spec import parse_network

__all__ = [
    "MODES",
    "Network",
    "Routes",
    "clos",
    "custom",
    "fail_links",
    "fail_random",
    "fat_tree",
    "info",
    "info_text",
    "leaf_spine",
    "make_network",
    "parse_network",
    "place",
    "route",
    "scaling_table",
    "scaling_text",
]
