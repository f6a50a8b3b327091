"""Gradient compression between the gradient buffer and the all-reduce (`--compress`).

Every compressor has one contract (distnet.compress.base.Compressor): built over the flat
gradient buffer, its parameter tensors and the ranges it will be asked to reduce (the whole
buffer, or the bucketer's buckets); ``start(comm, lo, hi, algorithm)`` sums ``grads[lo:hi]``
over the ranks in place with any registered all-reduce and returns a test/wait handle.
Adding one is a file plus a ``register`` line below. Importing this never initialises MPI.
"""

from distnet.compress.base import Chain, Compressor, Tensor, tensors_of
from distnet.compress.cast import bf16, fp16
from distnet.compress.powersgd import powersgd
from distnet.compress.registry import COMPRESSORS, get, register

register("none", Compressor)
register("fp16", fp16)
register("bf16", bf16)
register("powersgd", powersgd)

__all__ = ["COMPRESSORS", "Chain", "Compressor", "Tensor", "get", "register", "tensors_of"]
