"""Lightning callbacks of lmforge, one module each:

- clock: `train/elapsed`, wall-clock seconds of fitting, resumed runs included
- data_wait: `train/data_wait`, the share of the loop's time spent between batches (fetching the next)
- final_validation: a validation after the last step when `trainer.max_steps` ends a run between two
- heap: freed memory kept in the process for the next step's tensors (glibc)
- last_checkpoint: checkpoints/last.ckpt, a hard link to a checkpoint just written at the same step
- optuna_pruning: prune a bad trial of an Optuna sweep from its validation metric
- peak_memory: `train/peak_mem_gb`, peak device memory (GPU) or resident set (CPU)
- periodic_checkpoint: checkpoints every N steps and/or M minutes, keeping the last K
- preemption: on SIGTERM/SIGUSR1/SIGUSR2/Ctrl-C, a checkpoint at the next step boundary, then a clean stop
- progress: the rich progress bar, reading metrics only on the steps the loggers write
- run_in_checkpoints: the run's resolved config in every checkpoint, loggers flushed first
- samples: a short generated text every N steps
- step_seed: the random generators seeded from (seed, rank, batch index) before each training batch
- throughput: tokens per second, and MFU against the device's peak (lmforge.peak_flops)
"""
