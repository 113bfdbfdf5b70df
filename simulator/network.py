"""Procedural road and rail networks, one per region, in a local metric frame (x east, y north).

Each region has a city grid with junctions and traffic lights, small towns, curved rural roads,
motorways with a tunnel and a rail line. Edges are chains of straight pieces and circular
arcs (``curv_1pm``, signed: positive turns left) that start and end on their nodes exactly:
curved edges are built from symmetric "wiggles" (+k, -k, +k arcs) whose net heading change and
lateral offset are zero, so route geometry chains node to node without drift. Routes are
time-shortest paths, precomputed for all node pairs of a region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from simulator.population import REGIONS

ROAD_URBAN, ROAD_RURAL, ROAD_MOTORWAY, ROAD_RAIL = 0, 1, 2, 3
CONTROL_NONE, CONTROL_LIGHT, CONTROL_STOP_SIGN = 0, 1, 2
NODE_ROAD, NODE_STATION = 0, 1
PLACE_NONE = -1  # node outside the city (place 0) and the towns (places 1..)

_KMH = 1.0 / 3.6


@dataclass(frozen=True)
class RoadNetwork:
    """All regions' networks as flat arrays; node ids are global, routing tables per region."""

    region_node_offsets: np.ndarray  # int64[n_regions + 1]
    node_x_m: np.ndarray
    node_y_m: np.ndarray
    node_kind: np.ndarray  # NODE_ROAD or NODE_STATION
    node_control: np.ndarray  # CONTROL_*
    node_place: np.ndarray  # 0 city, 1.. town, PLACE_NONE elsewhere
    node_turn_radius_m: np.ndarray
    edge_class: np.ndarray
    edge_limit_mps: np.ndarray
    edge_tunnel: np.ndarray  # int8
    edge_piece_offsets: np.ndarray  # int64[n_edges + 1]
    piece_len_m: np.ndarray
    piece_curv_1pm: np.ndarray
    edge_heading_rad: np.ndarray  # chord direction from the edge's first to its second node
    table_offsets: np.ndarray  # int64[n_regions + 1], into the n x n tables below
    directed_edge: np.ndarray  # int64, 2 * edge + reversed, -1 where no edge joins i to j
    predecessor: np.ndarray  # int64 local node ids of time-shortest paths, -1 where none
    travel_time_s: np.ndarray  # float64 along time-shortest paths (inf where unreachable)
    path_length_m: np.ndarray  # float64 shortest lengths (for choosing destinations)

    def region_nodes(self, region: int) -> np.ndarray:
        return np.arange(self.region_node_offsets[region], self.region_node_offsets[region + 1])

    def table(self, name: str, region: int) -> np.ndarray:
        """A region's n x n routing table (``predecessor``, ``travel_time_s``, ...)."""
        n = int(self.region_node_offsets[region + 1] - self.region_node_offsets[region])
        start = int(self.table_offsets[region])
        flat: np.ndarray = getattr(self, name)
        return flat[start : start + n * n].reshape(n, n)


class _RegionBuilder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.node_x: list[float] = []
        self.node_y: list[float] = []
        self.node_kind: list[int] = []
        self.node_control: list[int] = []
        self.node_place: list[int] = []
        self.node_radius: list[float] = []
        self.edges: list[tuple[int, int, int, float, bool, list[tuple[float, float]]]] = []

    def node(self, x: float, y: float, *, kind: int = NODE_ROAD, control: int = CONTROL_NONE,
             place: int = PLACE_NONE, radius_m: float = 25.0) -> int:
        self.node_x.append(x)
        self.node_y.append(y)
        self.node_kind.append(kind)
        self.node_control.append(control)
        self.node_place.append(place)
        self.node_radius.append(radius_m)
        return len(self.node_x) - 1

    def edge(self, u: int, v: int, road_class: int, limit_mps: float, *, tunnel: bool = False) -> None:
        chord_m = float(np.hypot(self.node_x[v] - self.node_x[u], self.node_y[v] - self.node_y[u]))
        pieces = _edge_pieces(chord_m, road_class, tunnel, self.rng)
        self.edges.append((u, v, road_class, limit_mps, tunnel, pieces))

    def chain(self, u: int, v: int, road_class: int, limit_mps: float, spacing_m: float,
              offset_sd_m: float, *, tunnel_segment: int = -1) -> None:
        """Join u and v through intermediate nodes with random sideways offsets."""
        x0, y0, x1, y1 = self.node_x[u], self.node_y[u], self.node_x[v], self.node_y[v]
        length = float(np.hypot(x1 - x0, y1 - y0))
        n_seg = max(1, round(length / spacing_m))
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length
        previous = u
        radius = 1000.0 if road_class == ROAD_MOTORWAY else 40.0
        for k in range(1, n_seg + 1):
            if k == n_seg:
                current = v
            else:
                f = k / n_seg
                off = float(self.rng.normal(0.0, offset_sd_m))
                current = self.node(x0 + f * (x1 - x0) + off * nx, y0 + f * (y1 - y0) + off * ny,
                                    radius_m=radius)
            if k - 1 == tunnel_segment:
                self._tunnel(previous, current, road_class, limit_mps)
            else:
                self.edge(previous, current, road_class, limit_mps)
            previous = current

    def _tunnel(self, u: int, v: int, road_class: int, limit_mps: float) -> None:
        """A straight tunnel in the middle of the segment u-v, with open road either side."""
        xu, yu, xv, yv = self.node_x[u], self.node_y[u], self.node_x[v], self.node_y[v]
        a = self.node(xu + 0.3 * (xv - xu), yu + 0.3 * (yv - yu), radius_m=1000.0)
        b = self.node(xu + 0.6 * (xv - xu), yu + 0.6 * (yv - yu), radius_m=1000.0)
        self.edge(u, a, road_class, limit_mps)
        self.edge(a, b, road_class, limit_mps, tunnel=True)
        self.edge(b, v, road_class, limit_mps)

    def grid(self, cx: float, cy: float, n: int, spacing_m: float, place: int,
             arterial_every: int) -> np.ndarray:
        ids = np.empty((n, n), dtype=np.int64)
        for i in range(n):
            for j in range(n):
                arterial_i, arterial_j = i % arterial_every == 0, j % arterial_every == 0
                r = self.rng.random()
                if arterial_i and arterial_j:
                    control = CONTROL_LIGHT if r < 0.85 else CONTROL_NONE
                elif arterial_i or arterial_j:
                    control = CONTROL_LIGHT if r < 0.35 else (CONTROL_STOP_SIGN if r < 0.45 else CONTROL_NONE)
                else:
                    control = CONTROL_STOP_SIGN if r < 0.12 else CONTROL_NONE
                jitter = self.rng.uniform(-12.0, 12.0, 2)
                ids[i, j] = self.node(cx + (i - (n - 1) / 2) * spacing_m + jitter[0],
                                      cy + (j - (n - 1) / 2) * spacing_m + jitter[1],
                                      control=control, place=place,
                                      radius_m=float(self.rng.uniform(9.0, 14.0)))
        for i in range(n):
            for j in range(n):
                for di, dj in ((1, 0), (0, 1)):
                    if i + di < n and j + dj < n:
                        line_is_arterial = (i % arterial_every == 0) if di == 0 else (j % arterial_every == 0)
                        limit = 50.0 if line_is_arterial or n < 6 else 30.0
                        self.edge(int(ids[i, j]), int(ids[i + di, j + dj]), ROAD_URBAN, limit * _KMH)
        return ids


def _edge_pieces(chord_m: float, road_class: int, tunnel: bool,
                 rng: np.random.Generator) -> list[tuple[float, float]]:
    """(length_m, curv_1pm) pieces of an edge whose end lies exactly ``chord_m`` ahead."""
    if road_class == ROAD_URBAN or tunnel:
        return [(chord_m, 0.0)]
    lead_m, wiggle_m, theta_low, theta_high = {
        ROAD_RURAL: (60.0, 900.0, 0.2, 0.9),
        ROAD_MOTORWAY: (250.0, 3000.0, 0.03, 0.12),
        ROAD_RAIL: (400.0, 4000.0, 0.02, 0.08),
    }[road_class]
    lead_m = min(lead_m, 0.15 * chord_m)
    rest_m = chord_m - 2.0 * lead_m
    n_wiggles = max(1, round(rest_m / wiggle_m))
    theta = float(rng.uniform(theta_low, theta_high))
    # One wiggle advances 4 * quarter * sin(theta) / theta along the chord.
    quarter_m = rest_m / n_wiggles / (4.0 * np.sin(theta) / theta)
    curv = theta / quarter_m
    pieces = [(lead_m, 0.0)]
    for _ in range(n_wiggles):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        pieces += [(quarter_m, sign * curv), (2.0 * quarter_m, -sign * curv), (quarter_m, sign * curv)]
    pieces.append((lead_m, 0.0))
    return pieces


def _build_region(region: int, rng: np.random.Generator) -> _RegionBuilder:
    b = _RegionBuilder(rng)
    motorway_limit = REGIONS[region].motorway_limit_kmh * _KMH
    city = b.grid(0.0, 0.0, 9, 260.0, place=0, arterial_every=4)
    city_station = b.node(130.0, 130.0, kind=NODE_STATION, place=0, radius_m=2000.0)
    n_towns = 4
    town_grids, town_stations, town_xy = [], [], []
    base_angle = rng.uniform(0.0, 2.0 * np.pi)
    for k in range(n_towns):
        angle = base_angle + k * np.pi / 2.0 + rng.uniform(-0.4, 0.4)
        dist = rng.uniform(9_000.0, 28_000.0)
        tx, ty = dist * np.cos(angle), dist * np.sin(angle)
        town_xy.append((tx, ty, angle, dist))
        town_grids.append(b.grid(tx, ty, 4, 220.0, place=k + 1, arterial_every=3))
        town_stations.append(b.node(tx + 110.0, ty + 110.0, kind=NODE_STATION, place=k + 1, radius_m=2000.0))

    def nearest(ids: np.ndarray, x: float, y: float) -> int:
        flat = ids.ravel()
        d = np.hypot(np.asarray(b.node_x)[flat] - x, np.asarray(b.node_y)[flat] - y)
        return int(flat[np.argmin(d)])

    for k in range(n_towns):
        tx, ty, angle, dist = town_xy[k]
        c_node = nearest(city, tx, ty)
        t_node = nearest(town_grids[k], 0.0, 0.0)
        b.chain(c_node, t_node, ROAD_RURAL, 80.0 * _KMH, 2_500.0, 250.0)
        nx_, ny_, *_ = town_xy[(k + 1) % n_towns]
        b.chain(nearest(town_grids[k], nx_, ny_), nearest(town_grids[(k + 1) % n_towns], tx, ty),
                ROAD_RURAL, 80.0 * _KMH, 2_500.0, 300.0)
        if dist >= 12_000.0:
            ux, uy = np.cos(angle), np.sin(angle)
            near_city = b.node(1_800.0 * ux, 1_800.0 * uy, radius_m=60.0)
            near_town = b.node(tx - 1_500.0 * ux, ty - 1_500.0 * uy, radius_m=60.0)
            b.edge(nearest(city, 1_800.0 * ux, 1_800.0 * uy), near_city, ROAD_RURAL, 70.0 * _KMH)
            b.edge(near_town, nearest(town_grids[k], tx - 1_500.0 * ux, ty - 1_500.0 * uy),
                   ROAD_RURAL, 70.0 * _KMH)
            b.chain(near_city, near_town, ROAD_MOTORWAY, motorway_limit, 4_000.0, 150.0,
                    tunnel_segment=1 if k == 0 else -1)
        mid = b.node(0.5 * tx + rng.normal(0.0, 400.0), 0.5 * ty + rng.normal(0.0, 400.0),
                     kind=NODE_STATION, radius_m=2000.0)
        b.edge(city_station, mid, ROAD_RAIL, 33.0)
        b.edge(mid, town_stations[k], ROAD_RAIL, 33.0)
    return b


def build_network(rng: np.random.Generator) -> RoadNetwork:
    builders = [_build_region(r, rng) for r in range(len(REGIONS))]
    node_offsets = np.zeros(len(builders) + 1, dtype=np.int64)
    table_offsets = np.zeros(len(builders) + 1, dtype=np.int64)
    for r, b in enumerate(builders):
        node_offsets[r + 1] = node_offsets[r] + len(b.node_x)
        table_offsets[r + 1] = table_offsets[r] + len(b.node_x) ** 2
    edge_rows: list[tuple[int, int, int, float, bool, list[tuple[float, float]]]] = []
    directed = np.full(int(table_offsets[-1]), -1, dtype=np.int64)
    predecessor = np.empty(int(table_offsets[-1]), dtype=np.int64)
    travel_time = np.empty(int(table_offsets[-1]))
    path_length = np.empty(int(table_offsets[-1]))
    for r, b in enumerate(builders):
        n = len(b.node_x)
        base = int(node_offsets[r])
        rows, cols, times, lengths = [], [], [], []
        for u, v, road_class, limit, tunnel, pieces in b.edges:
            e = len(edge_rows)
            edge_rows.append((u + base, v + base, road_class, limit, tunnel, pieces))
            length = sum(p[0] for p in pieces)
            t0 = int(table_offsets[r])
            directed[t0 + u * n + v] = 2 * e
            directed[t0 + v * n + u] = 2 * e + 1
            rows += [u, v]
            cols += [v, u]
            times += [length / limit] * 2
            lengths += [length] * 2
        time_graph = csr_matrix((times, (rows, cols)), shape=(n, n))
        dist, pred = dijkstra(time_graph, directed=True, return_predecessors=True)
        length_graph = csr_matrix((lengths, (rows, cols)), shape=(n, n))
        t0, t1 = int(table_offsets[r]), int(table_offsets[r + 1])
        travel_time[t0:t1] = dist.ravel()
        predecessor[t0:t1] = np.where(pred < 0, -1, pred).ravel()
        path_length[t0:t1] = dijkstra(length_graph, directed=True).ravel()

    piece_counts = np.array([len(e[5]) for e in edge_rows], dtype=np.int64)
    piece_offsets = np.concatenate([[0], np.cumsum(piece_counts)]).astype(np.int64)
    all_pieces = np.array([p for e in edge_rows for p in e[5]], dtype=np.float64)
    node_x = np.concatenate([np.asarray(b.node_x) for b in builders])
    node_y = np.concatenate([np.asarray(b.node_y) for b in builders])
    edge_u = np.array([e[0] for e in edge_rows], dtype=np.int64)
    edge_v = np.array([e[1] for e in edge_rows], dtype=np.int64)
    return RoadNetwork(
        region_node_offsets=node_offsets,
        node_x_m=node_x,
        node_y_m=node_y,
        node_kind=np.concatenate([np.asarray(b.node_kind, dtype=np.int64) for b in builders]),
        node_control=np.concatenate([np.asarray(b.node_control, dtype=np.int64) for b in builders]),
        node_place=np.concatenate([np.asarray(b.node_place, dtype=np.int64) for b in builders]),
        node_turn_radius_m=np.concatenate([np.asarray(b.node_radius) for b in builders]),
        edge_class=np.array([e[2] for e in edge_rows], dtype=np.int64),
        edge_limit_mps=np.array([e[3] for e in edge_rows], dtype=np.float64),
        edge_tunnel=np.array([e[4] for e in edge_rows], dtype=np.int8),
        edge_piece_offsets=piece_offsets,
        piece_len_m=np.ascontiguousarray(all_pieces[:, 0]),
        piece_curv_1pm=np.ascontiguousarray(all_pieces[:, 1]),
        edge_heading_rad=np.arctan2(node_y[edge_v] - node_y[edge_u], node_x[edge_v] - node_x[edge_u]),
        table_offsets=table_offsets,
        directed_edge=directed,
        predecessor=predecessor,
        travel_time_s=travel_time,
        path_length_m=path_length,
    )
