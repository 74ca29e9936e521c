"""A discrete-event model of N cmcache nodes pulling one model together (SimPy).

Three protocols, on the same network:

- ``queue`` (wait-then-copy, ``[cluster] swarm = false``): one node takes the Redis fetch
  lock and fetches the model from the origin; it hashes it, places it and announces it. The
  others poll Redis every ``poll`` seconds; once they see the holder they all copy from it,
  sharing its upload.
- ``swarm`` (as built): a relay tree. Every node still fetching serves the pieces it has
  finished, seen ``lag`` after they arrive (its `serve` looks at aria2's bitfield every
  ``POLL``); the nodes join a line in Redis in the order they come, and each copies from its
  parent in a tree of ``fanout`` children per node laid over the line (the origin fetcher at
  the root), so that no upload is shared by every follower. A copy in progress also adds each
  node that has placed the model at its next look (``look``).
- ``star`` (the swarm before the relay tree): every node copies from the fetching node, whose
  upload they all share, and from nodes that placed it.
- ``ideal``: what a piece-aware fetcher would reach: every node serves each piece it has
  from the moment it has it, and each node takes its lowest missing pieces from any peer
  that has them and a free connection (held back on a piece until a holder is free).

The whole-file hash comes after the last piece, on every node.

What is modelled: pieces (a piece is served only once its holder has all of it), the origin's
cap (one fetch, single flight), each node's upload and download bandwidth split into
``slots`` connections (aria2's split for downloads, concurrent readers for uploads), Redis
round trips (lock, look-ups, announcements), the poll/heartbeat lag before a node learns of a
new source, a fixed cost per pull (process start, daemon, probes) and the sha256 check.
What is not: TCP dynamics, disk contention, CPU shared between nodes on one machine (the
loopback calibration absorbs it in ``start`` and ``hash_rate``), node failures.

Run alone: ``python benchmarks/swarm_sim.py --nodes 10 100 1000``.
"""

from __future__ import annotations

import argparse
import random
from collections import deque
from dataclasses import dataclass, replace

import simpy

MiB = 1 << 20
GB = 10**9


@dataclass(frozen=True)
class Net:
    """The network and the costs of one pull; rates in bytes per second."""

    size: float
    piece: float
    origin: float  # the origin's whole rate (one fetch)
    up: float  # each node's upload (its link, or `serve_rate`)
    down: float  # each node's download
    rtt: float = 0.0005  # one Redis round trip
    poll: float = 0.5  # how often a waiting node looks at Redis (WAIT_POLL)
    look: float = 1.0  # how often a copy looks for newly placed peers (SOURCE_LOOK)
    start: float = 0.5  # fixed cost of a pull before its first byte
    hash_rate: float = 1.0 * GB  # the sha256 check after the last byte
    slots: int = 4  # connections per download, and concurrent readers per upload
    fanout: int = 1  # children per node in the relay tree (``swarm``)
    lag: float = 0.05  # how late a node still fetching offers a piece it got (half a POLL)
    cores: int = 0  # CPUs all nodes share (loopback: one machine); 0 = a machine each
    lowest_first: bool = True  # stop at the first piece out of reach (False: take any piece a
    # free peer has; in this model that spreads connections over more pieces, each arriving
    # later, and relays slower: 3.71, 4.65, 4.80 times one node alone at 10, 100 and 1,000
    # nodes with 1 Gbit/s up)


@dataclass(frozen=True)
class Result:
    nodes: int
    protocol: str
    slowest: float
    fastest: float
    origin_bytes: float

    def row(self, alone: float, size: float) -> str:
        return (
            f"{self.nodes:>6} {self.protocol:<6} slowest {self.slowest:9.1f}s "
            f"({self.slowest / alone:6.2f}× alone)  origin {self.origin_bytes / size:.2f}×"
        )


def alone(net: Net) -> float:
    """One node pulling the model by itself."""
    return net.start + 2 * net.rtt + net.size / min(net.origin, net.down) + net.size / net.hash_rate


class _Swarm:
    """The state of one run; transfers are SimPy timeouts whose callbacks schedule more."""

    def __init__(self, net: Net, n: int, protocol: str, seed: int) -> None:
        self.net, self.n, self.protocol = net, n, protocol
        self.env = simpy.Environment()
        self.rng = random.Random(seed)
        self.pieces = max(1, round(net.size / net.piece))
        self.piece_bytes = net.size / self.pieces
        self.rate = min(net.up, net.down) / net.slots  # one connection's share
        self.have = [bytearray(self.pieces) for _ in range(n)]
        self.offers = [bytearray(self.pieces) for _ in range(n)]  # what each node serves
        self.count = [0] * n
        self.inflight: list[set[int]] = [set() for _ in range(n)]
        self.free_down = [net.slots] * n
        self.free_up = [net.slots] * n
        self.holders: list[list[int]] = [[] for _ in range(self.pieces)]
        self.placed: list[int] = []  # nodes that placed the model (``swarm``)
        self.waiters: list[deque[int]] = [deque() for _ in range(self.pieces)]
        self.wanted: set[int] = set()
        self.blocked: list[int | None] = [None] * n
        self.active = [False] * n
        self.known_at = [float("inf")] * n  # when others can use this node as a source
        self.done = [0.0] * n
        self.origin_bytes = 0.0
        self.cpu = simpy.Resource(self.env, net.cores) if net.cores else None

    def work(self, seconds: float) -> simpy.events.ProcessGenerator:
        """``seconds`` of CPU: on a shared machine, in turns of 50 ms with the other nodes."""
        if self.cpu is None:
            yield self.env.timeout(seconds)
            return
        while seconds > 0:
            turn = min(0.05, seconds)
            with self.cpu.request() as slot:
                yield slot
                yield self.env.timeout(turn)
            seconds -= turn

    # -- sources ---------------------------------------------------------------------------
    def usable(self, source: int, node: int) -> bool:
        if source == node or self.free_up[source] <= 0 or self.known_at[source] > self.env.now:
            return False
        if self.protocol == "swarm" and self.count[source] < self.pieces:
            return source == self.parent(node)  # a node still fetching feeds its children
        return True

    def parent(self, node: int) -> int:
        return (node - 1) // max(1, self.net.fanout)

    def find_source(self, piece: int, node: int, thorough: bool = True) -> int | None:
        """A holder of ``piece`` with a free upload slot; ``thorough``: when 8 random samples
        find none, look at every holder (else give up: another piece may do)."""
        if self.protocol == "swarm":  # its parent, else a node that placed it
            up = self.parent(node)
            if self.offers[up][piece] and self.usable(up, node):
                return up
            holders = self.placed
        else:
            holders = self.holders[piece]
        if len(holders) <= 8:
            candidates = [h for h in holders if self.usable(h, node)]
            return self.rng.choice(candidates) if candidates else None
        for _ in range(8):
            h = holders[self.rng.randrange(len(holders))]
            if self.usable(h, node):
                return h
        if not thorough:
            return None
        for h in holders:  # the samples were busy: look at every holder once
            if self.usable(h, node):
                return h
        return None

    # -- downloading -----------------------------------------------------------------------
    def fill(self, node: int) -> None:
        """Use ``node``'s free connections on the lowest pieces it lacks; held back at the
        first piece no peer with a free upload slot has (``lowest_first``), or only when no
        missing piece has one (``lowest_first = False``)."""
        if not self.active[node]:
            return
        have, inflight = self.have[node], self.inflight[node]
        stuck = None
        first = True
        piece = 0
        while self.free_down[node] > 0 and piece < self.pieces:
            if have[piece] or piece in inflight:
                piece += 1
                continue
            source = self.find_source(piece, node, first)
            first = False
            if source is not None:
                self.start_transfer(source, node, piece)
            else:
                stuck = piece if stuck is None else stuck
                if self.net.lowest_first:
                    break
            piece += 1
        idle = self.free_down[node] > 0 and (self.net.lowest_first or not inflight)
        if idle and stuck is not None:
            self.blocked[node] = stuck  # woken when a holder of it frees a slot
            self.waiters[stuck].append(node)
            self.wanted.add(stuck)

    def start_transfer(self, source: int, node: int, piece: int) -> None:
        self.free_up[source] -= 1
        self.free_down[node] -= 1
        self.inflight[node].add(piece)
        if self.blocked[node] == piece:
            self.blocked[node] = None
        event = self.env.timeout(self.piece_bytes / self.rate)
        event.callbacks.append(lambda _e: self.arrived(source, node, piece))

    def arrived(self, source: int, node: int, piece: int) -> None:
        self.free_up[source] += 1
        self.free_down[node] += 1
        self.inflight[node].discard(piece)
        self.got(node, piece)
        self.serve(source)
        self.fill(node)

    def got(self, node: int, piece: int) -> None:
        self.have[node][piece] = 1
        self.count[node] += 1
        if self.count[node] == self.pieces:
            self.active[node] = False
            self.env.process(self.finish(node))
        lag = self.net.lag if self.protocol in ("swarm", "star") else 0.0
        if lag and self.relays(node) and self.count[node] < self.pieces:
            offered = self.env.timeout(lag)
            offered.callbacks.append(lambda _e: self.offer(node, piece))
        else:
            self.offer(node, piece)

    def offer(self, node: int, piece: int) -> None:
        """``node`` serves ``piece`` from now on (to whom: ``usable``)."""
        self.offers[node][piece] = 1
        self.holders[piece].append(node)
        if self.relays(node) or self.count[node] == self.pieces:
            self.serve(node)

    def relays(self, node: int) -> bool:
        """Whether ``node`` serves pieces before it has them all: in ``ideal`` and ``swarm``
        every node (in ``swarm`` to its children); in ``star`` the node fetching from the
        origin, which every other node copies from at once."""
        return self.protocol in ("ideal", "swarm") or (self.protocol == "star" and node == 0)

    def serve(self, source: int) -> None:
        """Give ``source``'s free upload slots to nodes held back on pieces it has."""
        if not self.relays(source) and self.count[source] < self.pieces:
            return
        if self.protocol == "swarm" and self.count[source] < self.pieces:
            self.feed_children(source)
            return
        for piece in sorted(self.wanted, reverse=True):  # the newest piece is the rarest
            if self.free_up[source] <= 0:
                return
            if not self.offers[source][piece]:
                continue
            queue = self.waiters[piece]
            while queue and self.free_up[source] > 0:
                node = queue.popleft()
                if self.blocked[node] != piece or self.have[node][piece] or node == source:
                    continue
                if self.known_at[source] > self.env.now:
                    queue.appendleft(node)
                    break
                self.start_transfer(source, node, piece)
                self.fill(node)
            if not queue:
                self.wanted.discard(piece)

    def feed_children(self, source: int) -> None:
        """A node still fetching serves only its children in the relay tree."""
        k = max(1, self.net.fanout)
        for child in range(source * k + 1, min(self.n, source * k + k + 1)):
            piece = self.blocked[child]
            if piece is None or not self.offers[source][piece]:
                continue
            if self.free_up[source] <= 0 or self.known_at[source] > self.env.now:
                return
            self.start_transfer(source, child, piece)
            self.fill(child)

    # -- the nodes -------------------------------------------------------------------------
    def finish(self, node: int) -> simpy.events.ProcessGenerator:
        net = self.net
        yield from self.work(net.size / net.hash_rate)  # the check
        yield self.env.timeout(net.rtt)  # place, announce
        self.done[node] = self.env.now
        self.placed.append(node)
        if self.protocol == "queue" and node == 0:
            self.known_at[0] = self.env.now
        elif self.protocol in ("swarm", "star") and node:
            # Placed and announced: copies in progress add it at their next look.
            later = net.rtt + self.rng.random() * net.look
            self.known_at[node] = self.env.now + later
            known = self.env.timeout(later)
            known.callbacks.append(lambda _e: self.serve(node))

    def leader(self) -> simpy.events.ProcessGenerator:
        net = self.net
        yield from self.work(net.start)
        yield self.env.timeout(2 * net.rtt)  # take the lock
        if self.protocol != "queue":
            self.known_at[0] = self.env.now + net.rtt  # "fetching here" is announced
        per_piece = self.piece_bytes / min(net.origin, net.down)
        for piece in range(self.pieces):
            yield self.env.timeout(per_piece)
            self.origin_bytes += self.piece_bytes
            self.got(0, piece)

    def follower(self, node: int) -> simpy.events.ProcessGenerator:
        net = self.net
        yield from self.work(net.start)
        yield self.env.timeout(2 * net.rtt)  # find the lock taken
        phase = self.rng.random() * net.poll
        while self.known_at[0] > self.env.now:  # poll until a source is announced
            yield self.env.timeout(phase or net.poll)
            phase = 0.0
        yield self.env.timeout(net.rtt)  # look up the sources
        if self.protocol == "swarm":  # "fetching here" is announced: its children copy
            self.known_at[node] = self.env.now + net.rtt
        if self.protocol == "ideal":
            # It announces itself; the others learn of it at their next look (poll).
            self.known_at[node] = self.env.now + net.rtt + net.poll
            known = self.env.timeout(net.rtt + net.poll)
            known.callbacks.append(lambda _e: self.serve(node))
        self.active[node] = True
        self.fill(node)

    def run(self) -> Result:
        self.env.process(self.leader())
        for node in range(1, self.n):
            self.env.process(self.follower(node))
        self.env.run()
        assert all(self.count[i] == self.pieces for i in range(self.n)), "a node never finished"
        return Result(self.n, self.protocol, max(self.done), min(self.done), self.origin_bytes)


def simulate(net: Net, nodes: int, protocol: str, seed: int = 1) -> Result:
    """Slowest and fastest node and origin bytes for ``nodes`` nodes pulling one model."""
    return _Swarm(net, nodes, protocol, seed).run()


def datacenter(size: float = 20 * GB, piece: float = 256 * MiB) -> Net:
    """10 Gbit/s between nodes, a 1 Gbit/s origin, a 20 GB model."""
    return Net(size=size, piece=piece, origin=1.25e8, up=1.25e9, down=1.25e9, start=1.0)


def loopback(
    size: float,
    origin: float,
    up: float,
    start: float,
    hash_rate: float,
    cores: int = 0,
    rtt: float = 0.0002,
    fanout: int = 1,
) -> Net:
    """The loopback benchmark: nodes on 127.0.0.x, peers ~120 MiB/s, `serve_rate` = ``up``,
    aria2's 1 MiB pieces (a relayed piece moves on only once whole: with 4 MiB the model put
    6 nodes 13 to 20 % above five measured runs, with 1 MiB 4 to 11 % below);
    ``cores``: the CPUs the nodes get of the one machine they share (0: as many as needed)."""
    return Net(
        size=size,
        piece=1 * MiB,
        origin=origin,
        up=up,
        down=120 * MiB,
        rtt=rtt,
        start=start,
        hash_rate=hash_rate,
        cores=cores,
        fanout=fanout,
    )


def table(net: Net, counts: list[int]) -> list[str]:
    one = alone(net)
    lines = [f"one node alone: {one:.1f}s"]
    for n in counts:
        for protocol in ("queue", "star", "swarm", "ideal"):
            lines.append(simulate(net, n, protocol).row(one, net.size))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 100, 1000], metavar="N")
    parser.add_argument("--size-gb", type=float, default=20.0, metavar="GB")
    parser.add_argument("--piece-mib", type=float, default=256.0, metavar="MIB")
    parser.add_argument(
        "--up-gbit",
        type=float,
        default=10.0,
        metavar="GBIT",
        help="each node's upload (default: the 10 Gbit/s link)",
    )
    parser.add_argument(
        "--fanout", type=int, default=2, metavar="K", help="children per node in the relay tree"
    )
    args = parser.parse_args()
    net = datacenter(args.size_gb * GB, args.piece_mib * MiB)
    net = replace(net, up=args.up_gbit * 1.25e8, fanout=args.fanout)
    print(
        f"{args.size_gb:g} GB model, origin 1 Gbit/s, nodes 10 Gbit/s down, "
        f"{args.up_gbit:g} Gbit/s up, pieces {args.piece_mib:g} MiB"
    )
    for line in table(net, args.nodes):
        print(line)


if __name__ == "__main__":
    main()
