"""Reciprocal rank fusion of the ``sqlite`` store's lexical and dense rankings."""

from __future__ import annotations


def fuse(*rankings: list[tuple[int, float]], rrf_k: int = 60, k: int = 8) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: ``score = sum(1 / (rrf_k + rank))`` over rankings (rank from 1)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (rowid, _) in enumerate(ranking, start=1):
            fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
