"""Learning-rate schedules and optimizer parameter groups."""
