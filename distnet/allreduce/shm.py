"""`shm`: single-copy all-reduce for the ranks of one node, through one MPI-3 shared window.

Every rank owns one segment of a window made by ``MPI.Win.Allocate_shared`` on the
``Split_type(COMM_TYPE_SHARED)`` communicator, and maps every peer's segment too. A call is

1. copy the input into my segment (skipped when the buffer already *is* my segment: see
   `ShmAllreduce.buffer`, which the Bucketer uses so backward writes gradients straight in);
2. sync: every input is in place;
3. reduce my slice [n·r/p, n·(r+1)/p) straight out of the p segments, cache block by cache block,
   always in rank order 0, 1, …, p−1 (so the result does not depend on who computes it), and
   write each finished block into that slice of *every* segment;
4. sync: every slice of every segment holds the result; copy my segment out (skipped as in 1).

Nothing passes through an MPI transport: the transports of `native` and the schedules copy every
byte twice (into a bounce segment and out again), this copies it once on the way in and once on
the way out, and a zero-copy buffer not at all. Two syncs per call suffice: after sync 2 a rank
touches only its own segment, and a peer reads it only after the next call's sync 1.

Cost, per rank (n bytes, p ranks; α_s one sync, β_m memory copy time per byte, γ reduce time
per byte; c = 1 if the buffer must be copied in and out, 0 for a zero-copy buffer):
    2α_s + 2c·nβ_m + ((p−1)/p)·nγ + ((p−1)/p)·nβ_m
— the reduce reads p slices of n/p and the write-back stores p−1 of them. Each term is a memory
access, not a message, and p ranks run them at once on a shared memory bus, so the sum is
bounded below by the node's copy bandwidth, not by a link.

The simulator should see `shm` as node-local: it has no schedule (no sender, receiver, or
link), so `hierarchical` replays as a binomial tree inside a node, and a cluster model should
cost the intra-node part as the formula above with β_m from the memory bandwidth
`python -m distnet.bench` prints.

Synchronisation: `sync="spin"` (default) spins on per-rank epoch flags in the window and yields
the core (``sched_yield``) between looks, then sleeps with backoff, so a waiting rank gives its
core to the rank it waits for when ranks outnumber cores; `sync="barrier"` calls
``Barrier`` on the node communicator instead. Measured in the README's bench section.

A communicator spanning several nodes (or emulated nodes, DISTNET_RANKS_PER_NODE) has no common
shared memory: `shm` then runs `hierarchical` (binomial trees inside nodes, ring across node
leaders) — said here, not hidden.

Open MPI's UCX one-sided component prints errors on ``Allocate_shared`` when it cannot serve a
shared window; `distnet/__init__.py` sets ``OMPI_MCA_osc=^ucx`` as a default before MPI starts
(and `launch/local.sh` passes it to every rank), so the `sm` component serves the window.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distnet.allreduce.mpi import validate
from distnet.allreduce.ops import SUM, resolve_op
from distnet.common.errors import UserError

FLAG_BYTES = 64  # one cache line per rank for its epoch flag: no false sharing between ranks
BLOCK_BYTES = 128 << 10  # a reduce block per input: p of them stay in L2 while summed
MIN_CAPACITY = 64 << 10
# Looks (each yielding the core) before a waiting rank sleeps. Sleeping early is what costs: a
# 2-core run with 200 looks then backoff to 1 ms had 256 KiB calls of 3.8 ms (barrier: 44 µs).
SPIN_YIELDS = 100_000
SLEEP_S = 1e-4
SYNCS = ("spin", "barrier")


def _capacity(nbytes: int) -> int:
    """Segment size for an nbytes message: the next power of two (so regrowth is rare)."""
    return max(MIN_CAPACITY, 1 << max(0, nbytes - 1).bit_length())


@dataclass
class _Window:
    """One shared window: this rank's view of every segment and of every rank's flag."""

    win: Any
    node: Any  # the communicator the window lives on (ours, from Split_type)
    capacity: int
    segments: list[np.ndarray]  # uint8 views, one per rank, `capacity` bytes each
    flags: list[np.ndarray]  # one int64 per rank
    epoch: int = 0
    typed: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict)

    def views(self, dtype: np.dtype, n: int) -> list[np.ndarray]:
        """The first n elements of every segment as dtype (cached: the hot loop reuses them)."""
        key = (dtype.str, n)
        got = self.typed.get(key)
        if got is None:
            if len(self.typed) > 32:
                self.typed.clear()
            got = self.typed[key] = [s[:n * dtype.itemsize].view(dtype) for s in self.segments]
        return got

    def free(self) -> None:
        self.win.Unlock_all()
        self.win.Free()


def _allocate(node: Any, capacity: int) -> _Window:
    """Collective over node: a window of `capacity` data bytes plus one flag line per rank."""
    from mpi4py import MPI

    win = MPI.Win.Allocate_shared(capacity + FLAG_BYTES, 1, comm=node)
    segments, flags = [], []
    for j in range(node.size):
        mem, _unit = win.Shared_query(j)
        raw = np.frombuffer(mem, dtype=np.uint8)  # type: ignore[call-overload]
        segments.append(raw[:capacity])
        flags.append(raw[capacity:capacity + 8].view(np.int64))
    flags[node.rank][0] = 0
    win.Lock_all()  # one passive epoch for the window's life: Win.Sync needs one
    node.Barrier()  # every flag is zero before anyone can raise one
    return _Window(win, node, capacity, segments, flags)


@dataclass
class _CommState:
    comm: Any  # held so the key's handle cannot be recycled while the entry lives
    node: Any  # Split_type(COMM_TYPE_SHARED) of comm
    single_node: bool
    window: _Window | None = None


class ShmAllreduce:
    """The `shm` algorithm with its bounded window cache (call it like any all-reduce).

    One window per communicator, grown to the next power of two of the largest message seen
    (the regrowth is collective and happens on every rank at the same call, since every rank
    reduces the same sizes in the same order). At most `max_comms` communicators and
    `max_bytes` of segments per rank are kept; the least recently used is freed first. `close`
    frees everything (it is collective over every cached communicator).
    """

    def __init__(self, sync: str = "spin", max_comms: int = 8,
                 max_bytes: int = 1 << 30) -> None:
        if sync not in SYNCS:
            raise UserError(f"shm sync must be one of {', '.join(SYNCS)}, got {sync!r}")
        self.sync = sync
        self.max_comms = max_comms
        self.max_bytes = max_bytes
        self._states: OrderedDict[int, _CommState] = OrderedDict()
        self._owned: list[_Window] = []  # zero-copy buffers handed out, each its own window
        self._finalize_keyval: int | None = None

    # -- cache --------------------------------------------------------------------------
    def _state(self, comm: Any) -> _CommState:
        key = comm.handle
        st = self._states.get(key)
        if st is not None and st.comm is comm:
            self._states.move_to_end(key)
            return st
        from mpi4py import MPI

        # A miss: drop the entries of communicators freed since (Free is collective, so every
        # rank drops the same ones here). Keyed lookups alone would not do: a freed handle may
        # come back on some ranks only, and only they would free the stale window.
        for stale in [k for k, s in self._states.items() if k == key or s.comm == MPI.COMM_NULL]:
            self._drop(stale)
        self._free_at_finalize()
        from distnet.allreduce.hierarchical import node_map

        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        # node_map honours DISTNET_RANKS_PER_NODE, so emulated nodes take the fallback too.
        single = comm.allreduce(node.size == comm.size, op=MPI.LAND) and len(
            set(node_map(comm))) == 1
        st = self._states[key] = _CommState(comm, node, single)
        self._evict()
        return st

    def _bytes(self) -> int:
        return sum(s.window.capacity for s in self._states.values() if s.window is not None)

    def _evict(self) -> None:
        while len(self._states) > self.max_comms or (
                self._bytes() > self.max_bytes and len(self._states) > 1):
            self._drop(next(iter(self._states)))

    def _drop(self, key: int) -> None:
        st = self._states.pop(key)
        if st.window is not None:
            st.window.free()
        st.node.Free()

    def _free_at_finalize(self) -> None:
        """Free the windows when MPI_Finalize starts (COMM_SELF attributes are deleted first)."""
        if self._finalize_keyval is not None:
            return
        from mpi4py import MPI

        self._finalize_keyval = MPI.Comm.Create_keyval(delete_fn=lambda *_: self.close())
        MPI.COMM_SELF.Set_attr(self._finalize_keyval, True)

    def close(self) -> None:
        """Free every window, zero-copy buffers included (collective, in creation order)."""
        for key in list(self._states):
            self._drop(key)
        for w in self._owned:
            w.free()
            w.node.Free()
        self._owned = []

    def _window(self, st: _CommState, nbytes: int) -> _Window:
        w = st.window
        if w is None or w.capacity < nbytes:
            if w is not None:
                w.free()
                st.window = None
            st.window = w = _allocate(st.node, _capacity(nbytes))
            self._evict()
        return w

    # -- zero copy ----------------------------------------------------------------------
    def buffer(self, comm: Any, n: int, dtype: Any) -> np.ndarray:
        """A zeroed n-element array that lives in a shared window of its own (collective).

        Reducing it, or any contiguous slice of it at the same offset on every rank, skips
        the copy in and out. On a communicator spanning nodes it is a plain array.
        """
        from mpi4py import MPI

        dt = np.dtype(dtype)
        if n < 0:
            raise UserError(f"shm buffer length must be >= 0, got {n}")
        if not self._state(comm).single_node:
            return np.zeros(n, dtype=dt)
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        w = _allocate(node, max(8, n * dt.itemsize))
        self._owned.append(w)
        mine = w.segments[node.rank][:n * dt.itemsize].view(dt)
        mine.fill(0)
        return mine

    def _owner(self, buf: np.ndarray) -> tuple[_Window, int] | None:
        """(window, byte offset) if buf lies in one of the zero-copy buffers."""
        if not self._owned:
            return None
        addr = buf.__array_interface__["data"][0]
        for w in self._owned:
            base = w.segments[w.node.rank].__array_interface__["data"][0]
            if base <= addr and addr + buf.nbytes <= base + w.capacity:
                return w, addr - base
        return None

    # -- the algorithm ------------------------------------------------------------------
    def __call__(self, comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
        """All-reduce buf in place across comm (one node), as the module docstring describes."""
        validate(buf)
        ufunc = resolve_op(op).ufunc
        if comm.size == 1:
            return
        st = self._state(comm)
        if not st.single_node:
            from distnet.allreduce.hierarchical import hierarchical_allreduce

            hierarchical_allreduce(comm, buf, op=op)
            return
        n = buf.shape[0]
        owner = self._owner(buf)
        if owner is not None and owner[0].node.size != comm.size:
            raise UserError("a zero-copy shm buffer must be reduced on the communicator it "
                            "was made for (or a duplicate of it)")
        if owner is None:
            w = self._window(st, buf.nbytes)
            segs = w.views(buf.dtype, n)
            np.copyto(segs[st.node.rank], buf)
        else:
            w, offset = owner
            if offset % buf.itemsize:
                raise UserError("a zero-copy shm buffer slice must be element-aligned")
            first = offset // buf.itemsize
            segs = [v[first:first + n] for v in w.views(buf.dtype, first + n)]
        self._sync(w)
        _reduce_slice(segs, st.node.rank, ufunc)
        self._sync(w)
        if owner is None:
            np.copyto(buf, segs[st.node.rank])

    def _sync(self, w: _Window) -> None:
        if self.sync == "barrier":
            w.node.Barrier()
            return
        w.epoch += 1
        e = w.epoch
        w.win.Sync()  # my data writes are visible before my flag says so
        w.flags[w.node.rank][0] = e
        looks = 0
        for f in w.flags:
            while f[0] < e:
                looks += 1
                if looks < SPIN_YIELDS:
                    os.sched_yield()  # hand the core to a rank we wait for
                else:
                    time.sleep(SLEEP_S)  # a peer is gone for long (stopped, debugger): idle
        w.win.Sync()  # and the peers' data is visible after their flags are


def _reduce_slice(segs: list[np.ndarray], r: int, ufunc: np.ufunc) -> None:
    """Reduce slice r of the p segments in rank order, writing the result into every segment."""
    p = len(segs)
    n = segs[0].shape[0]
    lo, hi = n * r // p, n * (r + 1) // p
    step = max(1, BLOCK_BYTES // segs[0].itemsize)
    first, rest = segs[0], segs[1:]
    for b in range(lo, hi, step):
        e = min(hi, b + step)
        acc = first[b:e]  # segment 0's block holds the running result: no scratch copy
        for s in rest:
            ufunc(acc, s[b:e], out=acc)
        for s in rest:
            np.copyto(s[b:e], acc)

