"""`shm`: single-copy all-reduce for the ranks of one node, through one MPI-3 shared window.

Every rank owns one segment of a window made by ``MPI.Win.Allocate_shared`` on the
``Split_type(COMM_TYPE_SHARED)`` communicator, and maps every peer's segment too. Two paths:

*Zero copy* (the buffer lies in a window: `ShmAllreduce.buffer`, which the trainers use for the
flat gradient buffer so backward writes straight into it): sync (every input is in place);
reduce my slice [n·r/p, n·(r+1)/p) straight out of the p segments, cache block by cache block,
in rank order 0, 1, …, p−1, writing each finished block into that slice of *every* segment;
sync (every slice of every segment holds the result). Nothing is copied but the result.

*Private buffer*, chunk by chunk (≤ CHUNK_BYTES, so the p inputs of a chunk stay in cache):
copy the peers' slices of my input into my slot (my own slice is reduced straight out of my
buffer), sync, copy the previous chunk's result slices of the peers out, reduce my slice in
rank order into my slot and my buffer; one last sync and copy-out. Up to SMALL_BYTES every rank
instead copies all of its input in, syncs once and reduces the whole message itself.

Every rank ends bitwise identical: each element is summed in rank order, by one rank or by all.
Nothing passes through an MPI transport. Open MPI's `sm` transport with CMA (single copy) moves
each byte once into the peer plus a reduce; the private-buffer path moves it into the window,
reduces, and out again (one copy more), so it ties native; the zero-copy path has no copy at
all and is where `shm` beats it (README, "Measured here").

Cost, per rank (n bytes, p ranks; α_s one sync, β_m memory copy time per byte, γ reduce time
per byte; k = ⌈n / CHUNK_BYTES⌉ chunks):
    zero copy:       2α_s + ((p−1)/p)·nγ + ((p−1)/p)·nβ_m
    private buffer:  (k+1)α_s + ((p−1)/p)·nγ + (2(p−1)/p + 1/p)·nβ_m
    small (≤ SMALL_BYTES): α_s + nβ_m + (p−1)·nγ
— the zero-copy reduce reads p slices of n/p and the write-back stores p−1 of them; the private
path copies (p−1)/p of the input in, its own result slice out of the window and (p−1)/p of the
result out. Each term is a memory access, not a message, and p ranks run them at once on a
shared memory bus, so the sum is bounded below by the node's copy bandwidth, not by a link.

The simulator should see `shm` as node-local: it has no schedule (no sender, receiver, or
link), so `hierarchical` replays as a binomial tree inside a node, and a cluster model should
cost the intra-node part as the formula above with β_m from the memory bandwidth
`python -m distnet.bench` prints.

Synchronisation: `sync="spin"` (default) spins on per-rank epoch flags in the window, first
without giving up the core (a peer on the other core arrives within microseconds, and a yield
would hand the core to any foreign process for a whole time slice), then yielding it
(``sched_yield``) between looks, so a waiting rank gives its core to the rank it waits for when
ranks outnumber cores, then sleeping. When the node's ranks outnumber the cores they may run on
(the union of their affinities), the spin is skipped and a waiter yields at its first look: the
rank it waits for is then likely queued on its core; `sync="barrier"` calls
``Barrier`` on the node communicator instead. Measured in the README's bench section.

A communicator spanning several nodes (or emulated nodes, DISTNET_RANKS_PER_NODE) has no common
shared memory: `shm` then runs `hierarchical` (shm inside each node, a ring across the node
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
from distnet.common.threads import allowed_cpus

FLAG_BYTES = 64  # one cache line per rank for its epoch flag: no false sharing between ranks
# A message is reduced chunk by chunk: copy in, sync, reduce, (next chunk's copy in), sync, copy
# out. The p inputs of a chunk (p · CHUNK_BYTES) stay in the 4 MiB L2s and the shared L3 while
# they are summed, so a 64 MiB message runs at cache speed instead of memory speed.
CHUNK_BYTES = 1 << 20  # 256 KiB – 4 MiB measured within noise of each other here
SLOTS = 3  # chunk slots per rank, used in turn: see `ShmAllreduce._copy_reduce` for why three
# Up to this size every rank reduces the whole message itself after one sync (_copy_reduce_small)
SMALL_BYTES = 16 << 10  # 4 KiB: 6.5 µs against 14 µs for two syncs (native 4.5 µs)
# A reduce block per input: p of them stay in L2 while summed. Measured zero-copy at 1 MiB, p = 2:
# 16 KiB blocks 124 µs, 64 KiB 101 µs, 256 KiB 92 µs (more NumPy calls cost more than the cache)
BLOCK_BYTES = 256 << 10
MIN_CAPACITY = 4 << 10
# Looks at a flag before a waiting rank yields its core: a yield hands the core to any other
# runnable process for a whole time slice (a foreign process on a shared machine: 4 KiB calls
# of 40 µs instead of 5), so a short wait (the peer runs on the other core) is spun out.
SPIN_LOOKS = 100
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
    """One shared window: this rank's view of every segment and of every rank's flag.

    A segment is `slots` slots of `slot_bytes` each (three chunk slots for the copy path, one
    slot spanning it all for a zero-copy buffer).
    """

    win: Any
    node: Any  # the communicator the window lives on (ours, from Split_type)
    capacity: int
    segments: list[np.ndarray]  # uint8 views, one per rank, `capacity` bytes each
    flags: list[np.ndarray]  # one int64 per rank
    slots: int = 1
    spin_looks: int = SPIN_LOOKS  # 0 when the node's ranks outnumber their cores: see _allocate
    epoch: int = 0
    turn: int = 0  # chunks reduced so far: chunk c uses slot c % slots
    typed: dict[tuple[str, int, int], list[np.ndarray]] = field(default_factory=dict)

    @property
    def slot_bytes(self) -> int:
        return self.capacity // self.slots

    def views(self, dtype: np.dtype, n: int, slot: int = 0) -> list[np.ndarray]:
        """The first n elements of slot `slot` of every segment as dtype (cached: the hot loop
        reuses them)."""
        key = (dtype.str, n, slot)
        got = self.typed.get(key)
        if got is None:
            if len(self.typed) > 48:
                self.typed.clear()
            at = slot * self.slot_bytes
            got = self.typed[key] = [s[at:at + n * dtype.itemsize].view(dtype)
                                     for s in self.segments]
        return got

    def free(self) -> None:
        self.win.Unlock_all()
        self.win.Free()


def _allocate(node: Any, capacity: int, slots: int = 1) -> _Window:
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
    # The allgather is also the barrier after which every flag is zero.
    cores = set().union(*node.allgather(allowed_cpus()))
    # With more ranks than cores, the rank a waiter waits for is queued behind it on the same
    # core: every look spun before yielding delays that rank (p = 4 on 2 cores, other load on
    # the machine: a 64 B shm call took 26 µs without the spin, 35 µs with 100 spun looks).
    # Spinning pays only when every rank has a core.
    spin = SPIN_LOOKS if node.size <= len(cores) else 0
    return _Window(win, node, capacity, segments, flags, slots, spin)


def one_shared_node(shared: bool, nodes: tuple[int, ...]) -> bool:
    """Whether a communicator is one node whose ranks share memory: `shared` is what MPI
    says (every rank in one COMM_TYPE_SHARED group), `nodes` the node map (which
    DISTNET_RANKS_PER_NODE may set). A map that puts ranks without common memory on one node is
    refused: believed, `hierarchical` would hand this same communicator back to shm for ever."""
    from distnet.allreduce.hierarchical import RANKS_PER_NODE_ENV

    one_node = len(set(nodes)) == 1
    if one_node and not shared:
        raise UserError(f"{RANKS_PER_NODE_ENV}={os.environ.get(RANKS_PER_NODE_ENV, '')} puts "
                        f"{len(nodes)} ranks that do not share memory on one node; set it to "
                        "at most the ranks per host, or unset it")
    return one_node and shared


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
        shared = bool(comm.allreduce(node.size == comm.size, op=MPI.LAND))
        single = one_shared_node(shared, node_map(comm))
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
        slot = _capacity(min(nbytes, CHUNK_BYTES))
        w = st.window
        if w is None or w.slot_bytes < slot:
            if w is not None:
                w.free()
                st.window = None
            st.window = w = _allocate(st.node, SLOTS * slot, SLOTS)
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

    def release(self, buf: np.ndarray) -> None:
        """Free the window of a buffer from `buffer` (collective; buf must not be used again).
        A plain array (a communicator spanning nodes) is left to the garbage collector."""
        found = self._owner(buf)
        if found is None:
            return
        w = found[0]
        self._owned.remove(w)
        w.free()
        w.node.Free()

    def holds(self, buf: np.ndarray) -> bool:
        """Whether buf lies in a buffer from `buffer` (a reduction of it copies nothing)."""
        return self._owner(buf) is not None

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
        # A small message takes the one-sync path even from a zero-copy buffer: its two syncs
        # cost more than copying a few KiB (4 KiB: 5.2 µs against 9.3 µs).
        owner = None if buf.nbytes <= SMALL_BYTES else self._owner(buf)
        if owner is None:
            w = self._window(st, buf.nbytes)
            if buf.nbytes <= SMALL_BYTES:
                self._copy_reduce_small(w, buf, ufunc)
            else:
                self._copy_reduce(w, buf, st.node.rank, ufunc)
            return
        w, offset = owner
        if w.node.size != comm.size:
            # made for another communicator (a shrunk one after a failure): copy it through
            self._copy_reduce(self._window(st, buf.nbytes), buf, st.node.rank, ufunc)
            return
        if offset % buf.itemsize:
            raise UserError("a zero-copy shm buffer slice must be element-aligned")
        first, n = offset // buf.itemsize, buf.shape[0]
        segs = [v[first:first + n] for v in w.views(buf.dtype, first + n)]
        self._sync(w)
        _reduce_slice(segs, st.node.rank, ufunc)
        self._sync(w)

    def _copy_reduce_small(self, w: _Window, buf: np.ndarray, ufunc: np.ufunc) -> None:
        """A small buf: copy it in, sync once, and every rank reduces all of it from the p
        slots in rank order (the same sum everywhere). p·n reads instead of n, but one sync
        and four NumPy calls: at a few KiB the calls are the cost, not the bytes.

        One sync suffices: a peer reads my slot only before its next sync, and I write this
        slot again three chunks later, after two more syncs (the slot rule of _copy_reduce).
        """
        segs = w.views(buf.dtype, buf.shape[0], w.turn % SLOTS)
        w.turn += 1
        np.copyto(segs[w.node.rank], buf)
        self._sync(w)
        ufunc(segs[0], segs[1], out=buf)
        for s in segs[2:]:
            ufunc(buf, s, out=buf)

    def _copy_reduce(self, w: _Window, buf: np.ndarray, r: int, ufunc: np.ufunc) -> None:
        """buf (private memory) through the window, one chunk of at most a slot at a time.

        Per chunk: copy the peers' slices of my input into my slot (my own slice I reduce
        straight out of buf), sync, copy out the previous chunk's result, reduce my slice of
        this one into my slot and into buf. The sync after a chunk's copy-in is the sync
        before the previous chunk's copy-out, so a message of k chunks costs k + 1 syncs.

        Three slots, because a peer may still copy chunk c's result out of my slot c % 3
        (until it reaches the sync after chunk c + 1's copy-in) while I already copy chunk
        c + 2 in; I reach chunk c + 3's copy-in only after that sync. The chunk counter runs
        on across calls, so the next call's first copy-in is safe for the same reason.
        """
        p = len(w.segments)
        n = buf.shape[0]
        per = w.slot_bytes // buf.itemsize
        pending: tuple[list[np.ndarray], np.ndarray, tuple[int, ...]] | None = None
        for o in range(0, n, per):
            m = min(per, n - o)
            segs = w.views(buf.dtype, m, w.turn % SLOTS)
            w.turn += 1
            cuts = _cuts(m, p)
            lo, hi = cuts[r], cuts[r + 1]
            mine, chunk = segs[r], buf[o:o + m]
            if lo:
                np.copyto(mine[:lo], chunk[:lo])
            if hi < m:
                np.copyto(mine[hi:], chunk[hi:])
            self._sync(w)
            if pending is not None:
                _copy_out(*pending, r)
            _reduce_own(segs, chunk, r, lo, hi, ufunc)
            pending = (segs, chunk, cuts)
        self._sync(w)
        if pending is not None:
            _copy_out(*pending, r)

    def _sync(self, w: _Window) -> None:
        if self.sync == "barrier":
            w.node.Barrier()
            return
        w.epoch += 1
        e = w.epoch
        w.win.Sync()  # my data writes are visible before my flag says so
        w.flags[w.node.rank][0] = e
        looks = 0
        spin = w.spin_looks
        for f in w.flags:
            while f[0] < e:
                looks += 1
                if looks < spin:
                    continue  # the peer is on its own core and almost there: keep ours
                if looks < SPIN_YIELDS:
                    os.sched_yield()  # hand the core to a rank we wait for
                else:
                    time.sleep(SLEEP_S)  # a peer is gone for long (stopped, debugger): idle
        w.win.Sync()  # and the peers' data is visible after their flags are


def _cuts(m: int, p: int) -> tuple[int, ...]:
    """Slice bounds of p ranks over m elements: rank j owns [m·j/p, m·(j+1)/p)."""
    return tuple(m * j // p for j in range(p + 1))


def _reduce_own(segs: list[np.ndarray], chunk: np.ndarray, r: int, lo: int, hi: int,
                ufunc: np.ufunc) -> None:
    """Slice [lo, hi) of the chunk reduced in rank order into my slot and into chunk (mine).

    My own input is chunk itself (never copied into the window); the running sum lives in my
    slot's slice, which no copy-in touched, so it aliases no input.
    """
    ins = list(segs)
    ins[r] = chunk
    acc_all = segs[r]
    step = max(1, BLOCK_BYTES // chunk.itemsize)
    for b in range(lo, hi, step):
        e = min(hi, b + step)
        acc = acc_all[b:e]
        ufunc(ins[0][b:e], ins[1][b:e], out=acc)
        for x in ins[2:]:
            ufunc(acc, x[b:e], out=acc)
        np.copyto(chunk[b:e], acc)


def _copy_out(segs: list[np.ndarray], chunk: np.ndarray, cuts: tuple[int, ...], r: int) -> None:
    """Every peer's reduced slice of a chunk from its slot into my buffer."""
    for j, seg in enumerate(segs):
        if j != r:
            np.copyto(chunk[cuts[j]:cuts[j + 1]], seg[cuts[j]:cuts[j + 1]])


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

