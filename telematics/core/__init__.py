"""Numba core: raw GPS, IMU and OBD arrays to cleaned tracks, events and trip features."""
