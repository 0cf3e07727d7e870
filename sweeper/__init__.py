"""snsweep's service layer: the stages of a sweep, one subpackage each.

    spec ──► run ──► results ──► analysis
      ▲        │                    ▲
      └──── cli (the command line drives every stage) ──┘

- ``sweeper.spec``: sweep files and presets -> a validated ``SweepSpec`` (pydantic, PyYAML).
- ``sweeper.run``: Ray Tune + Optuna run the trials (``trainers`` does the training); the
  driver's recorder writes MLflow runs and Parquet rows.
- ``sweeper.results``: the Parquet record (schema, atomic writes, ``load``).
- ``sweeper.analysis``: pure statistics over results and the best-scale report (no Ray, no torch).
- ``sweeper.cli``: the ``sweeper`` command and Ray Jobs submission.
- ``sweeper.errors``: the user-error family every stage raises and only the CLI prints.

Imports go one way, left to right above (``tests/test_layering.py`` enforces it): a stage never
imports a later one, and nothing imports ``cli``.
"""
