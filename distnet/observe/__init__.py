"""Seeing where the time goes: per-rank timeline (trace), straggler blame, stall reports,
progress bars. Nothing here changes what a run computes; every piece can be left off."""
