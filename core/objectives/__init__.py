"""Training objectives: vanilla flow matching, Self-Flow and REPA over one SiT backbone."""

from .base import LossOutput, Objective, drop_labels, resolve_layer
from .fm import FlowMatchingObjective
from .repa import REPAObjective
from .selfflow import SelfFlowObjective

__all__ = [
    "LossOutput", "Objective", "drop_labels", "resolve_layer",
    "FlowMatchingObjective", "SelfFlowObjective", "REPAObjective",
]
