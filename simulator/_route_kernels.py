"""numba kernels expanding node-to-node routes into chains of straight and arc pieces."""

from __future__ import annotations

import numpy as np

from simulator._jit import serial_kernel

# What a piece ends at (the junction kinds equal network.CONTROL_*).
END_MID_EDGE = -1
END_NODE = 0
END_LIGHT = 1
END_STOP_SIGN = 2
END_STATION = 3
END_DESTINATION = 4
END_WAYPOINT = 5  # an intermediate stop of a tour

_MIN_TURN_RAD = 0.02


@serial_kernel
def _wrap_angle(a: float) -> float:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


@serial_kernel
def _path_nodes(pred: np.ndarray, n: int, origin: int, destination: int, out: np.ndarray) -> int:
    """Local node ids from origin to destination into ``out``; returns their count (0: none)."""
    count = 0
    node = destination
    while node != origin:
        if node < 0 or count >= out.shape[0] - 1:
            return 0
        out[count] = node
        count += 1
        node = pred[origin * n + node]
    out[count] = origin
    count += 1
    out[:count] = out[:count][::-1].copy()
    return count


@serial_kernel
def _tour_nodes(pred: np.ndarray, n: int, stops: np.ndarray, scratch: np.ndarray, out: np.ndarray,
                waypoint: np.ndarray) -> int:
    """Nodes of the time-shortest paths through ``stops`` in turn; 0 if a leg is impossible."""
    count = 0
    for leg in range(stops.shape[0] - 1):
        n_leg = _path_nodes(pred, n, stops[leg], stops[leg + 1], scratch)
        if n_leg < 2:
            return 0
        first = 0 if leg == 0 else 1  # the leg starts where the previous one ended
        for k in range(first, n_leg):
            out[count] = scratch[k]
            waypoint[count] = k == n_leg - 1 and leg + 2 < stops.shape[0]
            count += 1
    return count


@serial_kernel
def _expand_route(
    nodes: np.ndarray, waypoint: np.ndarray, n_nodes: int, node_base: int, n: int, table_base: int,
    directed_edge: np.ndarray, node_x_m: np.ndarray, node_y_m: np.ndarray,
    node_kind: np.ndarray, node_control: np.ndarray, node_turn_radius_m: np.ndarray,
    edge_class: np.ndarray, edge_limit_mps: np.ndarray, edge_tunnel: np.ndarray,
    edge_piece_offsets: np.ndarray, piece_len_m: np.ndarray, piece_curv_1pm: np.ndarray,
    edge_heading_rad: np.ndarray, write: bool, pos: int,
    out_len_m: np.ndarray, out_curv_1pm: np.ndarray, out_x0_m: np.ndarray, out_y0_m: np.ndarray,
    out_h0_rad: np.ndarray, out_limit_mps: np.ndarray, out_class: np.ndarray,
    out_tunnel: np.ndarray, out_end_kind: np.ndarray, out_turn_rad: np.ndarray,
) -> int:
    """Emit (or, with write False, only count) the pieces of one route; returns the count."""
    n_edges = n_nodes - 1
    count = 0
    x = node_x_m[node_base + nodes[0]]
    y = node_y_m[node_base + nodes[0]]
    trim_start = 0.0
    for k in range(n_edges):
        de = directed_edge[table_base + nodes[k] * n + nodes[k + 1]]
        e = de // 2
        reverse = de % 2 == 1
        p0 = edge_piece_offsets[e]
        p1 = edge_piece_offsets[e + 1]
        heading = edge_heading_rad[e] + (np.pi if reverse else 0.0)
        # The turn at the end of this edge: an arc cutting the corner by d on both sides.
        trim_end = 0.0
        turn = 0.0
        radius = 0.0
        e_next = e
        if k + 1 < n_edges:
            de_next = directed_edge[table_base + nodes[k + 1] * n + nodes[k + 2]]
            e_next = de_next // 2
            heading_next = edge_heading_rad[e_next] + (np.pi if de_next % 2 == 1 else 0.0)
            turn = _wrap_angle(heading_next - heading)
            if abs(turn) > _MIN_TURN_RAD:
                last_len = piece_len_m[p0 if reverse else p1 - 1]
                available = last_len - (trim_start if p1 - p0 == 1 else 0.0) - 0.5
                q0 = edge_piece_offsets[e_next]
                q1 = edge_piece_offsets[e_next + 1]
                first_next = piece_len_m[q1 - 1 if de_next % 2 == 1 else q0]
                available = min(available, 0.5 * first_next - 0.5)
                tan_half = np.tan(0.5 * abs(turn))
                radius = node_turn_radius_m[node_base + nodes[k + 1]]
                trim_end = radius * tan_half
                if trim_end > available:
                    trim_end = max(available, 0.0)
                    radius = trim_end / tan_half
                if radius < 1.0:
                    trim_end = 0.0
                    radius = 0.0
        end_node = node_base + nodes[k + 1]
        if k + 1 == n_edges:
            end_kind = END_DESTINATION
        elif waypoint[k + 1]:
            end_kind = END_WAYPOINT
        elif node_kind[end_node] == 1:
            end_kind = END_STATION
        else:
            end_kind = node_control[end_node]
        n_pieces = p1 - p0
        for j in range(n_pieces):
            src = p1 - 1 - j if reverse else p0 + j
            length = piece_len_m[src]
            curv = -piece_curv_1pm[src] if reverse else piece_curv_1pm[src]
            if j == 0:
                length -= trim_start
            if j == n_pieces - 1:
                length -= trim_end
            if write:
                i = pos + count
                out_len_m[i] = length
                out_curv_1pm[i] = curv
                out_x0_m[i] = x
                out_y0_m[i] = y
                out_h0_rad[i] = heading
                out_limit_mps[i] = edge_limit_mps[e]
                out_class[i] = edge_class[e]
                out_tunnel[i] = edge_tunnel[e]
                out_end_kind[i] = end_kind if j == n_pieces - 1 else END_MID_EDGE
                out_turn_rad[i] = 0.0
            x, y, heading = _advance(x, y, heading, length, curv)
            count += 1
        trim_start = trim_end
        if radius > 0.0:
            curv = np.sign(turn) / radius
            length = radius * abs(turn)
            if write:
                i = pos + count
                out_len_m[i] = length
                out_curv_1pm[i] = curv
                out_x0_m[i] = x
                out_y0_m[i] = y
                out_h0_rad[i] = heading
                out_limit_mps[i] = min(edge_limit_mps[e], edge_limit_mps[e_next])
                out_class[i] = edge_class[e]
                out_tunnel[i] = 0
                out_end_kind[i] = END_MID_EDGE
                out_turn_rad[i] = abs(turn)
            x, y, heading = _advance(x, y, heading, length, curv)
            count += 1
    return count


@serial_kernel
def _advance(x: float, y: float, heading: float, length: float, curv: float) -> tuple[float, float, float]:
    if curv == 0.0:
        return x + length * np.cos(heading), y + length * np.sin(heading), heading
    h1 = heading + curv * length
    return (x + (np.sin(h1) - np.sin(heading)) / curv,
            y - (np.cos(h1) - np.cos(heading)) / curv, h1)


@serial_kernel
def _route_pieces(
    trip_region: np.ndarray, stop_offsets: np.ndarray, stop_nodes: np.ndarray,
    region_node_offsets: np.ndarray, table_offsets: np.ndarray, predecessor: np.ndarray,
    directed_edge: np.ndarray, node_x_m: np.ndarray, node_y_m: np.ndarray,
    node_kind: np.ndarray, node_control: np.ndarray, node_turn_radius_m: np.ndarray,
    edge_class: np.ndarray, edge_limit_mps: np.ndarray, edge_tunnel: np.ndarray,
    edge_piece_offsets: np.ndarray, piece_len_m: np.ndarray, piece_curv_1pm: np.ndarray,
    edge_heading_rad: np.ndarray, write: bool, offsets: np.ndarray,
    out_len_m: np.ndarray, out_curv_1pm: np.ndarray, out_x0_m: np.ndarray, out_y0_m: np.ndarray,
    out_h0_rad: np.ndarray, out_limit_mps: np.ndarray, out_class: np.ndarray,
    out_tunnel: np.ndarray, out_end_kind: np.ndarray, out_turn_rad: np.ndarray,
) -> None:
    """Pieces of all trips: with write False fill ``offsets`` (counts), else fill the pieces."""
    max_nodes = 0
    for r in range(region_node_offsets.shape[0] - 1):
        max_nodes = max(max_nodes, region_node_offsets[r + 1] - region_node_offsets[r])
    max_legs = 1
    for t in range(trip_region.shape[0]):
        max_legs = max(max_legs, stop_offsets[t + 1] - stop_offsets[t] - 1)
    scratch = np.empty(max_nodes + 1, dtype=np.int64)
    nodes = np.empty(max_legs * (max_nodes + 1), dtype=np.int64)
    waypoint = np.empty(max_legs * (max_nodes + 1), dtype=np.bool_)
    for t in range(trip_region.shape[0]):
        r = trip_region[t]
        base = region_node_offsets[r]
        n = region_node_offsets[r + 1] - base
        tb = table_offsets[r]
        n_nodes = _tour_nodes(predecessor[tb : tb + n * n], n,
                              stop_nodes[stop_offsets[t] : stop_offsets[t + 1]], scratch, nodes, waypoint)
        count = _expand_route(
            nodes, waypoint, n_nodes, base, n, tb, directed_edge, node_x_m, node_y_m, node_kind,
            node_control, node_turn_radius_m, edge_class, edge_limit_mps, edge_tunnel,
            edge_piece_offsets, piece_len_m, piece_curv_1pm, edge_heading_rad, write,
            offsets[t], out_len_m, out_curv_1pm, out_x0_m, out_y0_m, out_h0_rad,
            out_limit_mps, out_class, out_tunnel, out_end_kind, out_turn_rad,
        )
        if not write:
            offsets[t + 1] = offsets[t] + count
