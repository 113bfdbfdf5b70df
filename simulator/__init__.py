"""Synthetic policyholders with known ground truth, in the wire formats real devices send.

``generate`` simulates drivers, trips and sensor feeds in memory; ``write`` stores uploads,
dongle feeds, a delivery plan and the truth; ``simulate_policies`` is the policy-level mode;
``iter_deliveries`` yields uploads in the order a server would receive them.
"""

from simulator.claims import simulate_policies, true_coefficients
from simulator.sensors import Streams
from simulator.simulation import SimulationResult, generate
from simulator.wire import delivery_plan, iter_deliveries, obd_payloads, phone_uploads, write

__all__ = [
    "SimulationResult",
    "Streams",
    "delivery_plan",
    "generate",
    "iter_deliveries",
    "obd_payloads",
    "phone_uploads",
    "simulate_policies",
    "true_coefficients",
    "write",
]
