"""The audit's memory of request_ids: a fixed-size Bloom filter, so memory never grows with the file."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["DEFAULT_BLOOM_BITS", "RequestIdFilter"]

#: Default Bloom filter size in bits (32 MiB): about 5e-5 false candidates per record at 1M records.
DEFAULT_BLOOM_BITS: Final = 1 << 28
# The block index takes at most 19 of the hash's low 30 bits.
_MAX_BLOCKS: Final = 1 << 19


class RequestIdFilter:
    """Which request_ids may have been seen before: a *candidate* is only probably a duplicate.

    A blocked Bloom filter: three bits in one 64-byte block (one cache miss),
    all placed by slices of one hash. About 1e-6 false candidates per record at
    a million request_ids at the default size; the audit's confirming pass
    removes them anyway. It never forgets, so a true duplicate is always a
    candidate.
    """

    __slots__ = ("_bits", "_mask")

    def __init__(self, bits: int = DEFAULT_BLOOM_BITS) -> None:
        blocks = min(_MAX_BLOCKS, max(1, 1 << (max(bits >> 9, 1) - 1).bit_length()))
        self._mask = blocks - 1
        self._bits = bytearray(blocks << 6)

    def add(self, request_ids: Iterable[str]) -> list[str]:
        """Remember the request_ids (in order); return those that were candidates when added.

        Takes a batch at a time so the hot loop runs here, once per batch of records.
        """
        bloom = self._bits
        block_mask = self._mask
        candidates = []
        for rid in request_ids:
            # One 64-bit hash places all three bits: the block from its low bits
            # (19 at most), each bit's byte from 6 bits, its place in the byte from 3.
            h = hash(rid)
            block = (h & block_mask) << 6
            o1 = block | (h >> 20 & 63)
            o2 = block | (h >> 26 & 63)
            o3 = block | (h >> 32 & 63)
            b1 = 1 << (h >> 38 & 7)
            b2 = 1 << (h >> 41 & 7)
            b3 = 1 << (h >> 44 & 7)
            if bloom[o1] & b1 and bloom[o2] & b2 and bloom[o3] & b3:
                candidates.append(rid)
            else:
                bloom[o1] |= b1
                bloom[o2] |= b2
                bloom[o3] |= b3
        return candidates
