"""Deduplication across all shards, as datatrove's stages: exact (a hash of the whole text; the first copy
stays) and MinHash near-duplicates (documents sharing a bucket of shingle hashes form a cluster; one stays)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader
from pydantic import Field

from lmforge.prepare.words import PlainWords

Count = Annotated[int, Field(ge=1)]
Stage = tuple[str, list, int]  # (name, steps, tasks)


class Shards(JsonlReader):
    """The JSONL.gz shards of the stage before (none at all when every document was removed)."""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if not self.data_folder.list_files():
            return
        yield from super().run(data, rank, world_size)


def text_of(doc: Document) -> str:
    """What exact deduplication compares: the whole text."""
    return doc.text


class ExactDedup:
    """Remove documents whose text equals an earlier one's (over every task's shard)."""

    def config(self):
        from datatrove.pipeline.dedup import ExactDedupConfig

        return ExactDedupConfig(content_getter=text_of)

    def stages(self, source: Path, work: Path, tasks: int, target: Path) -> list[Stage]:
        """Signatures per task, duplicates found in one task, then each task's shard without them,
        written to `target`."""
        from datatrove.pipeline.dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups
        from datatrove.pipeline.writers import JsonlWriter

        sigs, dups = work / "exact_signatures", work / "exact_duplicates"
        return [("exact-signatures", [Shards(str(source)), ExactDedupSignature(str(sigs), self.config())], tasks),
                ("exact-find", [ExactFindDedups(str(sigs), str(dups), self.config())], 1),
                ("exact-dedup", [Shards(str(source)), ExactDedupFilter(str(dups), self.config()),
                                 JsonlWriter(str(target))], tasks)]


class NearDedup:
    """Remove near-duplicates by MinHash: word `n_grams` shingles, `buckets` x `hashes_per_bucket` hashes
    (two documents with Jaccard similarity s share a bucket with probability 1-(1-s^r)^b). Defaults are
    FineWeb's (5-grams, 14 buckets of 8: ~75% similar pages are caught)."""

    def __init__(self, n_grams: Count = 5, buckets: Count = 14, hashes_per_bucket: Count = 8, seed: int = 1) -> None:
        self.n_grams, self.buckets, self.hashes_per_bucket, self.seed = n_grams, buckets, hashes_per_bucket, seed

    def config(self):
        from datatrove.pipeline.dedup import MinhashConfig

        return MinhashConfig(n_grams=self.n_grams, num_buckets=self.buckets, hashes_per_bucket=self.hashes_per_bucket,
                             seed=self.seed)

    def stages(self, source: Path, work: Path, tasks: int, target: Path) -> list[Stage]:
        """Signatures per task, matches per bucket (one task each), clusters in one task, then each task's
        shard without the duplicates of its clusters, written to `target`."""
        from datatrove.pipeline.dedup import (
            MinhashDedupBuckets,
            MinhashDedupCluster,
            MinhashDedupFilter,
            MinhashDedupSignature,
        )
        from datatrove.pipeline.writers import JsonlWriter

        sigs, buckets, ids = work / "minhash_signatures", work / "minhash_buckets", work / "minhash_remove"
        config = self.config()
        return [("minhash-signatures", [Shards(str(source)),
                                        MinhashDedupSignature(str(sigs), config, language=PlainWords())], tasks),
                ("minhash-buckets", [MinhashDedupBuckets(str(sigs), str(buckets), config=config)], self.buckets),
                ("minhash-cluster", [MinhashDedupCluster(str(buckets), str(ids), config=config)], 1),
                ("minhash-dedup", [Shards(str(source)), MinhashDedupFilter(str(ids)), JsonlWriter(str(target))],
                 tasks)]
