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
    placed by two 30-bit slices of the hash so the arithmetic stays on small
    ints. About 1e-6 false candidates per record at a million request_ids at
    the default size; the audit's confirming pass removes them anyway. It
    never forgets, so a true duplicate is always a candidate.
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
            h = hash(rid)
            lo = h & 0x3FFFFFFF
            hi = (h >> 32) & 0x3FFFFFFF
            o1 = ((lo & block_mask) << 6) | ((lo >> 19) & 63)
            o2 = (o1 & ~63) | (hi & 63)
            o3 = (o1 & ~63) | ((hi >> 9) & 63)
            b1 = 1 << ((lo >> 25) & 7)
            b2 = 1 << ((hi >> 6) & 7)
            b3 = 1 << ((hi >> 15) & 7)
            if bloom[o1] & b1 and bloom[o2] & b2 and bloom[o3] & b3:
                candidates.append(rid)
            else:
                bloom[o1] |= b1
                bloom[o2] |= b2
                bloom[o3] |= b3
        return candidates
