"""A small, fast counter-free random stream (splitmix64) for the hot simulator kernels.

numba's ``np.random`` draws a normal in about 15 ns; the sensor kernels need several per
sample at tens of millions of samples a second, so they carry a uint64 state instead and
draw approximately normal deviates as a scaled sum of four 16-bit uniforms (Irwin-Hall:
mean 0, variance 1, bounded at +-3.46, which suits sensor noise).
"""

from __future__ import annotations

import numpy as np

from simulator._jit import inline_kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_SHIFT_30 = np.uint64(30)
_SHIFT_27 = np.uint64(27)
_SHIFT_31 = np.uint64(31)
_SHIFT_11 = np.uint64(11)
_MASK_16 = np.uint64(0xFFFF)
_SHIFT_16 = np.uint64(16)
_SHIFT_32 = np.uint64(32)
_SHIFT_48 = np.uint64(48)
_INV_2_53 = 1.0 / 9007199254740992.0
_INV_2_16 = 1.0 / 65536.0
_IRWIN_HALL_SCALE = 1.7320508075688772  # sqrt(3): four U(0,1) sum to variance 1/3


@inline_kernel
def next_u64(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _SHIFT_30)) * _MIX_1
    z = (z ^ (z >> _SHIFT_27)) * _MIX_2
    return state, z ^ (z >> _SHIFT_31)


@inline_kernel
def uniform(state: np.uint64) -> tuple[np.uint64, float]:
    state, z = next_u64(state)
    return state, float(z >> _SHIFT_11) * _INV_2_53


@inline_kernel
def normal(state: np.uint64) -> tuple[np.uint64, float]:
    state, z = next_u64(state)
    total = (
        float(z & _MASK_16)
        + float((z >> _SHIFT_16) & _MASK_16)
        + float((z >> _SHIFT_32) & _MASK_16)
        + float(z >> _SHIFT_48)
    )
    return state, (total * _INV_2_16 - 2.0) * _IRWIN_HALL_SCALE


@inline_kernel
def exponential(state: np.uint64) -> tuple[np.uint64, float]:
    state, u = uniform(state)
    return state, -np.log(1.0 - u)
