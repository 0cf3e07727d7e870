"""Stage 2, run: a sweep on Ray Tune, Optuna choosing, the driver recording.

``run_sweep(spec, storage)`` starts (or connects to) Ray, builds the Tuner (``search``: Optuna
in a seed ``Repeater``, FIFO or ASHA), runs the trials (``trial``, ``distributed`` for DDP,
``packing`` for packed trials; each hands results over as ``reporting`` defines) and records
them from the driver (``recorder`` -> ``tracking`` for MLflow, ``sweeper.results`` for Parquet).
May import ``sweeper.spec``, ``sweeper.results``, ``sweeper.analysis`` (the final report),
``trainers``, Ray, Optuna and MLflow; never ``sweeper.cli``.
"""
