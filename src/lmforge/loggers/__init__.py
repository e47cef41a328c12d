"""Logger factories that need more than a `_target_` (W&B's offline-unless-credentials rule)."""
