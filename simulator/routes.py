"""Routes of many trips on the road network, as one flat table of pieces plus offsets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator._route_kernels import _route_pieces
from simulator.network import RoadNetwork


@dataclass(frozen=True)
class RoutePieces:
    """Pieces of all trips' routes; trip ``i`` owns rows ``offsets[i]:offsets[i + 1]``."""

    offsets: np.ndarray
    len_m: np.ndarray
    curv_1pm: np.ndarray
    x0_m: np.ndarray
    y0_m: np.ndarray
    h0_rad: np.ndarray
    limit_mps: np.ndarray
    road_class: np.ndarray
    tunnel: np.ndarray
    end_kind: np.ndarray
    turn_rad: np.ndarray


def route_pieces(network: RoadNetwork, region: np.ndarray, stop_offsets: np.ndarray,
                 stop_nodes: np.ndarray) -> RoutePieces:
    """Expand each trip's time-shortest route through its stops (local node ids of its region).

    Trip ``i`` visits ``stop_nodes[stop_offsets[i]:stop_offsets[i + 1]]`` in turn: an origin,
    any waypoints (where the vehicle stops briefly) and a destination.
    """
    region = np.ascontiguousarray(region, dtype=np.int64)
    stop_offsets = np.ascontiguousarray(stop_offsets, dtype=np.int64)
    stop_nodes = np.ascontiguousarray(stop_nodes, dtype=np.int64)
    n_trips = region.shape[0]
    if stop_offsets.shape != (n_trips + 1,) or stop_offsets[-1] != stop_nodes.shape[0]:
        raise ValueError("stop_offsets must have one entry per trip plus one, ending at len(stop_nodes)")
    if np.any(np.diff(stop_offsets) < 2):
        raise ValueError("every trip needs an origin and a destination")
    offsets = np.zeros(n_trips + 1, dtype=np.int64)
    net = network

    def run(write: bool, out: tuple[np.ndarray, ...]) -> None:
        _route_pieces(region, stop_offsets, stop_nodes, net.region_node_offsets, net.table_offsets,
                      net.predecessor, net.directed_edge, net.node_x_m, net.node_y_m,
                      net.node_kind, net.node_control, net.node_turn_radius_m, net.edge_class,
                      net.edge_limit_mps, net.edge_tunnel, net.edge_piece_offsets,
                      net.piece_len_m, net.piece_curv_1pm, net.edge_heading_rad, write,
                      offsets, *out)

    float_empty = np.empty(0)
    int_empty = np.empty(0, dtype=np.int64)
    run(False, (float_empty,) * 6 + (int_empty, np.empty(0, dtype=np.int8), int_empty, float_empty))
    n = int(offsets[-1])
    out = (np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n),
           np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int64),
           np.empty(n))
    run(True, out)
    return RoutePieces(offsets, *out)
