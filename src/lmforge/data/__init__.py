"""DataModules and data sources."""
