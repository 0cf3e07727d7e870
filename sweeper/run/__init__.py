"""Stage 2, run: a sweep on Ray Tune, Optuna choosing, the driver recording.

``run_sweep(spec, storage)`` starts (or connects to) Ray, builds the Tuner (``search``: Optuna
in a seed ``Repeater``, FIFO or ASHA), runs the trials (``trial``, ``distributed`` for DDP,
``packing`` for packed trials; each hands results over as ``reporting`` defines) and records
them from the driver (``recorder`` -> ``tracking`` for MLflow, ``sweeper.results`` for Parquet).
What a session runs comes from the ``ledger`` (the spec's trials minus the recorded ones), never
from Tune's saved state; ``finish`` checks it; ``session`` and ``reaper`` make sure one driver
drives a sweep and that its local Ray dies with it.
May import ``sweeper.spec``, ``sweeper.results``, ``sweeper.analysis`` (the final report),
``trainers``, Ray, Optuna and MLflow; never ``sweeper.cli``.
"""
