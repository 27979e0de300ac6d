"""The formal model of the specification: DS = (N, C, P), fault models and their bounds."""

from quorumkit.model.faults import (
    FaultModel,
    bounds_table,
    max_faulty,
    min_nodes,
    quorum_size,
    tolerance,
    validate,
)
from quorumkit.model.node import Node
from quorumkit.model.topology import PARTITION_SHAPES, Link, Partition, Topology, link

__all__ = [
    "PARTITION_SHAPES",
    "FaultModel",
    "Link",
    "Node",
    "Partition",
    "Topology",
    "bounds_table",
    "link",
    "max_faulty",
    "min_nodes",
    "quorum_size",
    "tolerance",
    "validate",
]
