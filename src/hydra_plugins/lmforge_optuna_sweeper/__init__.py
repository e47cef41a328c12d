"""lmforge's Hydra sweeper over Optuna's ask/tell API (`hydra/sweeper=lmforge_optuna`).

Hydra finds it in the `hydra_plugins` namespace package; `config.py` registers its config.
"""
