"""Every use of a private name of Lightning, Hydra, Optuna, lm-eval or datatrove, one module per library,
each stating the versions it was checked on (`CHECKED`, the bound in pyproject.toml): an upgrade that moves one of those
names fails tests/test_compat.py, naming it, instead of resume or sweeps going wrong silently.

- lightning: the fit loop's progress and validation rule, checkpoint and launcher state, the hooks we override
- hydra: running an app with our own parsed arguments, job errors, object lookup
- optuna: a study's storage and the ids of its study and trials
- lm_eval: reading a task YAML as lm-eval does
- datatrove: the local executor's per-task runner
"""
