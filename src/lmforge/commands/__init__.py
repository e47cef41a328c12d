"""One thin Hydra task per CLI command; the work lives in the library modules."""
