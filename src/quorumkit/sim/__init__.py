"""The deterministic simulator: ``from quorumkit.sim import Simulation``."""

from quorumkit.sim.core import Simulation, derive_seed
from quorumkit.sim.network import Network

__all__ = ["Network", "Simulation", "derive_seed"]
