"""PnP: robust initialisation, batched Levenberg-Marquardt, and BPnP (its exact gradients)."""

from pose6d_ros.pnp.bpnp import bpnp
from pose6d_ros.pnp.solver import PnPOptions, PnPResult, PnPStatus, solve_pnp

__all__ = ["PnPOptions", "PnPResult", "PnPStatus", "bpnp", "solve_pnp"]
