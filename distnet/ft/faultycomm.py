"""A communicator wrapper that injects network faults into the gradient reduction.

It has the interface of the mpi4py communicator it wraps (everything it does not override is
passed through), so `GradSync` and every all-reduce algorithm run on it unchanged. Faults are
active only on the rank they name and only during the steps they name; the trainer sets `step`.

- delay: every send-like call sleeps `seconds` first (a slow or congested link);
- drop: the rank's outgoing gradient data is lost: a collective is skipped, a Sendrecv only
  receives. MPI over TCP never loses a message, so this models a link that silently fails; the
  peers block until the reduction deadline revokes the communicator and the step is redone;
- bitflip: one high exponent bit flips in a buffer this rank receives (corruption in flight).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from distnet.ft.faultplan import Fault

SEND_LIKE = ("Send", "Isend", "Sendrecv", "Allreduce", "Iallreduce", "Reduce_scatter",
             "Reduce_scatter_block", "Allgather", "Iallgather")


def flip_bit(buf: np.ndarray, seed: int) -> int:
    """Flip the top exponent bit of one element of buf (chosen from seed); returns its index.

    That bit turns a gradient entry of magnitude < 2 into one near 1e38 (float32) or 1e308
    (float64): the kind of flip that poisons a model, as opposed to a low mantissa bit.
    """
    flat = buf.reshape(-1)
    if not flat.size:
        return -1
    i = int(np.random.default_rng(seed).integers(flat.size))
    bits: np.ndarray = flat[i:i + 1].view(np.uint64 if flat.dtype.itemsize == 8 else np.uint32)
    bits[0] = int(bits[0]) ^ (1 << (8 * flat.dtype.itemsize - 2))
    return i


class _State:
    """Shared by a FaultyComm and its duplicates (the bucketer reduces on duplicates)."""

    def __init__(self, faults: list[Fault]) -> None:
        self.faults = [f for f in faults if f.kind in ("delay", "drop", "bitflip")]
        self.step = -1
        self.consumed: set[Fault] = set()  # one-shot faults (drop, bitflip) already applied
        self.crash: Callable[[], None] | None = None  # die inside the next reduction
        self.calls = 0
        self.comms: list[Any] = []  # every communicator in use, to revoke them all


class FaultyComm:
    """Wraps an mpi4py communicator; `faults` are this rank's faults (others are ignored)."""

    def __init__(self, comm: Any, faults: list[Fault], state: _State | None = None) -> None:
        self._comm = comm
        self.state = state or _State(faults)
        self.state.comms.append(comm)

    def begin_step(self, step: int, crash: Callable[[], None] | None = None) -> None:
        self.state.step, self.state.crash, self.state.calls = step, crash, 0

    def all_comms(self) -> list[Any]:
        return list(self.state.comms)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._comm, name)
        if name in SEND_LIKE and callable(attr):
            return self._wrap(name, attr)
        return attr

    @property
    def comm(self) -> Any:
        return self._comm

    def Dup(self) -> FaultyComm:  # noqa: N802 - the mpi4py name
        return FaultyComm(self._comm.Dup(), [], self.state)

    def _active(self, kind: str) -> Fault | None:
        st = self.state
        for f in st.faults:
            if f.kind == kind and f.step <= st.step < f.step + f.steps and f not in st.consumed:
                return f
        return None

    def _wrap(self, name: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            st = self.state
            st.calls += 1
            # a collective is already "in the middle" for the peers; a p2p algorithm dies
            # after its first exchange
            if st.crash is not None and (st.calls > 1 or name in ("Allreduce", "Iallreduce")):
                strike, st.crash = st.crash, None  # once: a hang that ends must not repeat
                strike()
            delay = self._active("delay")
            if delay is not None:
                time.sleep(delay.seconds)
            drop = self._active("drop")
            if drop is not None and name in ("Allreduce", "Sendrecv", "Send"):
                self.state.consumed.add(drop)
                if name == "Sendrecv":
                    # keep receiving so this rank stays live; the peer never gets our data
                    # Sendrecv(sendbuf, dest, sendtag, recvbuf, source, recvtag)
                    recv = _arg(args, kwargs, 3, "recvbuf")
                    source = _arg(args, kwargs, 4, "source")
                    tag = _arg(args, kwargs, 5, "recvtag")
                    return self._comm.Recv(recv, source=source, tag=tag)
                return None
            result = fn(*args, **kwargs)
            flip = self._active("bitflip")
            if flip is not None and name in ("Allreduce", "Sendrecv"):
                recv = _recv_buffer(name, args, kwargs)
                if recv is not None:
                    self.state.consumed.add(flip)
                    flip_bit(recv, seed=flip.step)
            return result
        return call


def _recv_buffer(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> np.ndarray | None:
    """The NumPy array a call wrote into (IN_PLACE all-reduce: the send buffer)."""
    if name == "Allreduce":
        send = args[0] if args else kwargs.get("sendbuf")
        recv = args[1] if len(args) > 1 else kwargs.get("recvbuf")
        buf = recv if isinstance(recv, np.ndarray) else send
    else:
        buf = _arg(args, kwargs, 3, "recvbuf")
    if isinstance(buf, (list, tuple)):
        buf = buf[0]
    return buf if isinstance(buf, np.ndarray) else None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    if len(args) > i:
        return args[i]
    from mpi4py import MPI

    return {"source": MPI.ANY_SOURCE, "recvtag": MPI.ANY_TAG}.get(name)
