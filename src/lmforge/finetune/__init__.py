"""Fine-tuning: where the starting weights come from (`init_from`) and which of them train."""
