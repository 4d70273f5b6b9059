"""Paged KV blocks with automatic prefix caching (vLLM-style): chained block hashes, LRU eviction.

A block's hash covers its own token ids and, through its parent's hash, every token before it, so
two sequences share a cached block only if their whole prefixes up to that block are identical.
Only full blocks whose KV has been computed are cached. A block that no sequence references stays
cached in the free queue until it is reused; free blocks are reused least recently freed first,
and a sequence frees its blocks tail first, so the ends of prefixes are evicted before their
starts. With caching off the pool is a plain free list (no hashes are kept).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

ROOT_HASH = hash(("etalon-sim", "prefix-cache-root"))


def extend_block_hashes(hashes: list[int], token_ids: Sequence[int], block_size: int,
                        num_blocks: int) -> list[int]:
    """Grow ``hashes`` (chained hashes of the first full blocks of ``token_ids``) to ``num_blocks``.

    ``hashes[i] = hash((hashes[i-1], tuple(token_ids[i*B:(i+1)*B])))`` with ``hashes[-1]`` the root.
    Only full blocks are hashed: ``num_blocks`` is capped at ``len(token_ids) // block_size``.
    """
    num_blocks = min(num_blocks, len(token_ids) // block_size)
    parent = hashes[-1] if hashes else ROOT_HASH
    for i in range(len(hashes), num_blocks):
        parent = hash((parent, tuple(token_ids[i * block_size:(i + 1) * block_size])))
        hashes.append(parent)
    return hashes


class BlockPool:
    """``num_blocks`` KV blocks: reference counts, a free queue in reuse order, the hash index."""

    def __init__(self, num_blocks: int, caching: bool) -> None:
        self.num_blocks = num_blocks
        self.caching = caching
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._refs = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_free(self) -> int:
        """Blocks no sequence holds (cached ones included: they can be evicted)."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def lookup(self, hashes: Sequence[int]) -> list[int]:
        """Block ids of the longest cached prefix of ``hashes`` (empty with caching off)."""
        found: list[int] = []
        if not self.caching:
            return found
        cached = self._cached
        for block_hash in hashes:
            block = cached.get(block_hash)
            if block is None:
                break
            found.append(block)
        return found

    def free_among(self, blocks: Sequence[int]) -> int:
        """How many of ``blocks`` sit in the free queue (taking them uses up free blocks)."""
        return sum(1 for b in blocks if self._refs[b] == 0)

    def acquire(self, blocks: Sequence[int]) -> None:
        """Reference cached blocks a new sequence reuses (removing idle ones from the free queue)."""
        refs, free = self._refs, self._free
        for block in blocks:
            if refs[block] == 0:
                del free[block]
            refs[block] += 1

    def allocate(self, count: int) -> list[int]:
        """Take ``count`` blocks from the head of the free queue, evicting their cached hashes."""
        if count > len(self._free):
            raise ValueError(f"cannot allocate {count} KV blocks, {len(self._free)} free")
        out: list[int] = []
        free, refs, hash_of = self._free, self._refs, self._hash_of
        for _ in range(count):
            block, _ = free.popitem(last=False)
            old = hash_of[block]
            if old is not None:
                del self._cached[old]
                hash_of[block] = None
            refs[block] = 1
            out.append(block)
        return out

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference from each block; unreferenced ones join the free queue, tail first."""
        refs, free = self._refs, self._free
        for block in reversed(blocks):
            refs[block] -= 1
            if refs[block] == 0:
                free[block] = None

    def register(self, block: int, block_hash: int) -> None:
        """Cache a computed full block under its hash (a hash already cached keeps its block)."""
        if not self.caching or self._hash_of[block] is not None or block_hash in self._cached:
            return
        self._cached[block_hash] = block
        self._hash_of[block] = block_hash
