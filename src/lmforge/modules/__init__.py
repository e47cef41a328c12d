"""LightningModules: the task logic (losses, metrics, optimizers) around a model."""
