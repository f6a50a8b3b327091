"""Network topologies and a simulator for all-reduce schedules on them (pure Python + NumPy).

Imports only the all-reduce schedules from `distnet.allreduce`, never the trainer.
"""

from topology.builders import fat_tree
from topology.network import Network, make_network
from topology.routing import MODES, Routes, route

__all__ = ["MODES", "Network", "Routes", "fat_tree", "make_network", "route"]
