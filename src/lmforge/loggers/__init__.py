"""Logger factories: W&B offline unless credentials, and loggers that keep their history on resume."""
