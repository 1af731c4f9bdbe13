"""ABN checksum (Australian Business Register algorithm).

Subtract 1 from the first digit, multiply the 11 digits by the weights
10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, sum: the ABN is valid when the sum is divisible by 89.
"""

from __future__ import annotations

from operator import mul

WEIGHTS = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
_ZERO = ord("0")
# sum(w * (c - 48)) - 10 over the ASCII codes c: the "- 1 from the first digit" costs 10.
_OFFSET = _ZERO * sum(WEIGHTS) + 10


def abn_is_valid(abn: str) -> bool:
    """True when `abn` is 11 ASCII digits with a valid checksum."""
    if len(abn) != 11 or not abn.isascii() or not abn.isdigit():
        return False
    return (sum(map(mul, WEIGHTS, abn.encode())) - _OFFSET) % 89 == 0


def abn_from_base(base: int) -> str:
    """The valid ABN whose last nine digits are `base` (0 <= base < 10**9).

    The two leading check digits are chosen so the weighted sum is divisible by 89;
    every nine-digit base has exactly one such prefix in 10..99.
    """
    if not 0 <= base < 10**9:
        raise ValueError(f"base must be 0..999999999, got {base}")
    tail = f"{base:09d}"
    partial = sum(w * (ord(c) - _ZERO) for w, c in zip(WEIGHTS[2:], tail, strict=True))
    value = (-partial) % 89  # = 10 * (d1 - 1) + d2, in 0..88
    d1, d2 = value // 10 + 1, value % 10
    return f"{d1}{d2}{tail}"
