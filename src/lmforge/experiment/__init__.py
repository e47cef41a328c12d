"""From a config to the objects of an experiment, and back from a run directory to them."""
