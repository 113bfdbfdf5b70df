"""One simulated fleet with default noise and random phone mounts, run through the core once."""

from __future__ import annotations

import pytest

from simulator import SimulationResult, generate
from telematics.evaluation import CoreRun, run_core


@pytest.fixture(scope="session")
def fleet() -> SimulationResult:
    """400 drivers for 3 days with a 10 Hz IMU: hundreds of harsh events of each kind."""
    return generate(400, 3, seed=2024, imu_hz=10)


@pytest.fixture(scope="session")
def core(fleet: SimulationResult) -> CoreRun:
    return run_core(fleet, parallel=True)
