"""Small simulated populations shared by the simulator tests (generated once per session)."""

from __future__ import annotations

import pytest

from simulator import SimulationResult, generate


@pytest.fixture(scope="session")
def with_imu() -> SimulationResult:
    """A few drivers with a 10 Hz IMU: every stream present."""
    return generate(6, 2, seed=11, imu_hz=10)


@pytest.fixture(scope="session")
def no_imu() -> SimulationResult:
    """More drivers and days without IMU: enough events and trip modes for truth checks."""
    return generate(60, 4, seed=12, imu=False)
