"""`lmforge prepare`: turn raw sources (web crawl archives, JSONL, Parquet, text folders) into clean,
deduplicated JSONL.gz shards that `lmforge train data.paths=[<output_dir>]` reads, by building and running
a datatrove pipeline on a local or SLURM executor."""
