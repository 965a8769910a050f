"""Studies: a grid of runs over one experiment, run to completion and tabulated.

- ``spec``: the study file schema, validation and the grid's expansion into runs
- ``harness``: stage 1 once (per seed), then train -> sample -> evaluate each run, with
  ``status.json`` bookkeeping (finished runs skipped, interrupted ones resumed)
- ``report``: ``results.csv`` (one row per run) and ``results.md`` (mean ± std over seeds)
- ``plots``: metric vs λ, loss curves, sample filmstrips side by side
- ``rows``: what tables and plots share: the loss tags, the runs of a grid cell, mean ± std
- ``commands``: ``vfusion study --config configs/studies/NAME.yaml``
"""
