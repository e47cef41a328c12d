"""Deduplication across all shards, as datatrove's stages: exact (a hash of the whole text; the first copy
stays) and MinHash near-duplicates (documents sharing a bucket of shingle hashes form a cluster; one stays).

Each method's signatures are taken in the stage before it, right after that stage writes its shard (so a
document's index in the shard is its index in the signatures); then the duplicates are found, and each
task rewrites its shard without them."""

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
    """Task r's shard of the stage before, `0000r.jsonl.gz` (none when it kept no document)."""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        name = f"{rank:05d}.jsonl.gz"
        if self.data_folder.exists(name):
            for doc in self.read_files_shard([name]):
                self.update_doc_stats(doc)
                yield doc


def text_of(doc: Document) -> str:
    """What exact deduplication compares: the whole text."""
    return doc.text


def _writer(folder: Path):
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(str(folder), output_filename="${rank}.jsonl.gz")


class ExactDedup:
    """Remove documents whose text equals an earlier one's (over every task's shard)."""

    folder = "exact_dedup"

    def config(self):
        from datatrove.pipeline.dedup import ExactDedupConfig

        return ExactDedupConfig(content_getter=text_of)

    def signatures(self, work: Path):
        from datatrove.pipeline.dedup import ExactDedupSignature

        return ExactDedupSignature(str(work / "exact_signatures"), self.config())

    def stages(self, source: Path, work: Path, tasks: int, then: list) -> list[Stage]:
        """Duplicates found in one task, then each task's shard without them (and `then`'s steps)."""
        from datatrove.pipeline.dedup import ExactDedupFilter, ExactFindDedups

        sigs, dups = work / "exact_signatures", work / "exact_duplicates"
        return [("exact-find", [ExactFindDedups(str(sigs), str(dups), self.config())], 1),
                ("exact-dedup", [Shards(str(source)), ExactDedupFilter(str(dups), self.config()),
                                 _writer(work / self.folder), *then], tasks)]


class NearDedup:
    """Remove near-duplicates by MinHash: word `n_grams` shingles, `buckets` x `hashes_per_bucket` hashes
    (two documents with Jaccard similarity s share a bucket with probability 1-(1-s^r)^b). Defaults are
    FineWeb's (5-grams, 14 buckets of 8: ~75% similar pages are caught)."""

    folder = "near_dedup"

    def __init__(self, n_grams: Count = 5, buckets: Count = 14, hashes_per_bucket: Count = 8, seed: int = 1) -> None:
        self.n_grams, self.buckets, self.hashes_per_bucket, self.seed = n_grams, buckets, hashes_per_bucket, seed

    def config(self):
        from datatrove.pipeline.dedup import MinhashConfig

        return MinhashConfig(n_grams=self.n_grams, num_buckets=self.buckets, hashes_per_bucket=self.hashes_per_bucket,
                             seed=self.seed)

    def signatures(self, work: Path):
        from datatrove.pipeline.dedup import MinhashDedupSignature

        return MinhashDedupSignature(str(work / "minhash_signatures"), self.config(), language=PlainWords())

    def stages(self, source: Path, work: Path, tasks: int, then: list) -> list[Stage]:
        """Matches per bucket (one task each), clusters in one task, then each task's shard without the
        duplicates of its clusters (and `then`'s steps)."""
        from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter

        sigs, buckets, ids = work / "minhash_signatures", work / "minhash_buckets", work / "minhash_remove"
        config = self.config()
        return [("minhash-buckets", [MinhashDedupBuckets(str(sigs), str(buckets), config=config)], self.buckets),
                ("minhash-cluster", [MinhashDedupCluster(str(buckets), str(ids), config=config)], 1),
                ("minhash-dedup", [Shards(str(source)), MinhashDedupFilter(str(ids)), _writer(work / self.folder),
                                   *then], tasks)]
