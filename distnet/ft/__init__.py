"""Fault tolerance: fault plans and injection, ULFM recovery, deadlines, gradient integrity.

`FaultTolerantTrainer` (distnet.ft.resilient) is what `python -m distnet.train --ft ...` runs;
`python -m distnet.ft.supervise` restarts a dead job from its latest checkpoint. See docs/faults.md.
"""
