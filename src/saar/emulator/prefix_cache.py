"""A per-replica prefix cache: chained block hashes in an LRU, like vLLM's V1 engine.

Tokens are grouped into blocks of ``block_size``; only full blocks are cached. Each block's
hash covers the previous block's hash and the block's own tokens, so a block hit implies the
whole prefix before it matches (vLLM's ``hash_block_tokens``). The first block's parent is a
seed derived from the model name and the request's ``cache_salt``, so different models and
different salts never share blocks.

Cost per request is O(prompt blocks): one hash and one dict operation per block.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BlockChain", "PrefixCache"]

_SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class BlockChain:
    """The full-block hashes of one token sequence, in order, plus where the chain stopped.

    ``tail`` is the hash of the last full block (the seed when there is none); extending the
    chain with more tokens continues from it without rehashing the prefix.
    """

    hashes: tuple[bytes, ...]
    tail: bytes
    block_size: int

    @property
    def tokens(self) -> int:
        """Number of tokens covered by full blocks."""
        return len(self.hashes) * self.block_size


def _seed(model: str, cache_salt: str | None) -> bytes:
    salt = "" if cache_salt is None else cache_salt
    return hashlib.blake2b(f"{model}{_SEP}{salt}".encode(), digest_size=16).digest()


def _chain(parent: bytes, tokens: Sequence[str], block_size: int) -> tuple[list[bytes], bytes]:
    hashes: list[bytes] = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        block = _SEP.join(tokens[start : start + block_size]).encode()
        parent = hashlib.blake2b(parent + block, digest_size=16).digest()
        hashes.append(parent)
    return hashes, parent


class PrefixCache:
    """An LRU of block hashes with a fixed capacity in blocks."""

    def __init__(self, capacity_blocks: int, block_size: int) -> None:
        if capacity_blocks < 1 or block_size < 1:
            raise ValueError("capacity_blocks and block_size must be positive")
        self.capacity = capacity_blocks
        self.block_size = block_size
        # OrderedDict as LRU: oldest first; move_to_end on every hit or insert.
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def usage(self) -> float:
        """Fraction of the capacity in use, reported as ``vllm:kv_cache_usage_perc``."""
        return len(self._blocks) / self.capacity

    def chain(self, tokens: Sequence[str], model: str, cache_salt: str | None) -> BlockChain:
        """Hash the full blocks of a prompt."""
        hashes, tail = _chain(_seed(model, cache_salt), tokens, self.block_size)
        return BlockChain(tuple(hashes), tail, self.block_size)

    def extend(self, chain: BlockChain, prompt: Sequence[str], more: Sequence[str]) -> BlockChain:
        """Continue a prompt's chain with generated tokens (only the new blocks are hashed)."""
        rest = list(prompt[chain.tokens :]) + list(more)
        hashes, tail = _chain(chain.tail, rest, self.block_size)
        return BlockChain(chain.hashes + tuple(hashes), tail, self.block_size)

    def lookup_and_insert(self, chain: BlockChain) -> int:
        """Return the cached prefix length in tokens, then insert all of the chain's blocks.

        The hit is the longest run of leading blocks already held; those are refreshed and
        the rest inserted, evicting the least recently used blocks beyond capacity.
        """
        blocks = self._blocks
        hit = 0
        for h in chain.hashes:
            if h not in blocks:
                break
            hit += 1
        self.insert(chain)
        return hit * chain.block_size

    def insert(self, chain: BlockChain) -> None:
        """Insert (or refresh) every block of a chain, evicting LRU blocks beyond capacity.

        Blocks are touched tail first so that a chain's prefix is the most recently used
        part: vLLM frees a finished request's blocks in reverse order for the same reason,
        so eviction eats the tails of conversations before their shared prefixes.
        """
        blocks = self._blocks
        for h in reversed(chain.hashes):
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    def clear(self) -> None:
        """Drop every block (vLLM's ``/reset_prefix_cache``)."""
        self._blocks.clear()
