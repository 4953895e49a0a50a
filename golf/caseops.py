"""CaseOps: a bijective, character-level case transform (PR #1729 romeerp; #1736, #1769; spec §8).

``encode`` lowercases the text and writes its capitalization as four operator characters, which
the tokenizer learns as SentencePiece user-defined symbols (ids 4-7 after pad/BOS/EOS/UNK):

| symbol  | char   | meaning                                                              |
|---------|--------|----------------------------------------------------------------------|
| TITLE   | U+E000 | the next character is upper case (emitted before a Capitalized word) |
| ALLCAPS | U+E001 | every cased character of the next word is upper case                |
| CAPNEXT | U+E002 | the next character is upper case (inside mixed-case words)          |
| ESC     | U+E003 | the next character is literal (an operator char of the input)       |

Private-use characters, so real text almost never holds them; when it does, ESC keeps the
transform bijective: ``decode(encode(s)) == s`` for every string ``s``.

A *word* is a maximal run of ``str.isalpha`` characters. Only *castable* upper-case letters are
lowered: ``c`` whose ``c.lower()`` is one letter ``l`` with ``l.upper() == c``. Every other
character ('ß' -> 'SS', 'İ' -> 'i̇', titlecase 'ǅ', the Kelvin sign) is kept as it is, so the
decoder's ``l.upper()`` always restores the original. Per word: no castable upper letter ->
unchanged; only the first -> TITLE; two or more and no castable lower letter -> ALLCAPS;
otherwise ("McDonald", "iPhone") CAPNEXT before each upper letter.

BPB is charged on the original text: ``original_bytes`` gives, per character of the encoded
text, the UTF-8 bytes of the original character it decodes to (0 for an operator), which
``golf.tokenizer`` sums per token into the val byte sidecar.
"""
from __future__ import annotations

import functools
import re

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue000", "\ue001", "\ue002", "\ue003"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)


def _upper_of(l: str) -> str | None:
    """The upper-case letter that lowers to ``l`` and back, or None (``l`` has no castable upper)."""
    u = l.upper()
    return u if len(u) == 1 and u != l and u.lower() == l and u.isalpha() and l.isalpha() else None


def _castable_upper(c: str) -> bool:
    l = c.lower()
    return len(l) == 1 and l != c and _upper_of(l) == c


@functools.cache
def _word_re() -> re.Pattern:
    """Words (runs of str.isalpha characters) or operator characters; built on first use (~0.1 s)."""
    ranges, start = [], None
    for cp in range(0x110001):
        alpha = cp < 0x110000 and chr(cp).isalpha()
        if alpha and start is None:
            start = cp
        elif not alpha and start is not None:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(cp - 1))}")
            start = None
    return re.compile(f"([{''.join(ranges)}]+)|([{''.join(OPERATORS)}])")


def _encode_word(w: str) -> str:
    if w.lower() == w:  # fast path: nothing to lower (most words)
        return w
    up = [_castable_upper(c) for c in w]
    if not any(up):  # only uncastable letters changed by lower(), e.g. 'İ'
        return w
    low = "".join(c.lower() if u else c for c, u in zip(w, up))
    if up[0] and not any(up[1:]):
        return TITLE + low
    if sum(up) >= 2 and all(u or _upper_of(c) is None for c, u in zip(w, up)):
        return ALLCAPS + low
    return "".join(CAPNEXT + c.lower() if u else c for c, u in zip(w, up))


def _encode_match(m: re.Match) -> str:
    return _encode_word(m.group(1)) if m.group(1) else ESC + m.group(2)


def encode(text: str) -> str:
    """Lowercase ``text``, writing its capitalization as operator characters (see the module doc)."""
    return _word_re().sub(_encode_match, text)


def _decoded_chars(s: str) -> list[str]:
    """Per character of ``s``, the original character it stands for ("" for an operator).

    Raises ValueError where ``s`` is not something ``encode`` makes (an operator without a target).
    """
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == ESC or c == TITLE or c == CAPNEXT:
            nxt = s[i + 1] if i + 1 < n else ""
            orig = nxt if c == ESC else (_upper_of(nxt) if nxt else None)
            if not orig:
                raise ValueError(f"caseops: operator U+{ord(c):04X} at {i} is not followed by "
                                 f"{'a character' if c == ESC else 'a castable lower-case letter'}")
            out += ["", orig]
            i += 2
        elif c == ALLCAPS:
            j = i + 1
            while j < n and s[j].isalpha():
                j += 1
            if j == i + 1:
                raise ValueError(f"caseops: ALLCAPS at {i} is not followed by a word")
            out += [""] + [_upper_of(ch) or ch for ch in s[i + 1:j]]
            i = j
        else:
            out.append(c)
            i += 1
    return out


def decode(s: str) -> str:
    """The inverse of ``encode``: ``decode(encode(t)) == t`` for every string ``t``."""
    return "".join(_decoded_chars(s))


def original_bytes(s: str) -> list[int]:
    """Per character of the encoded ``s``: UTF-8 bytes of the original character (0 for operators).

    Sums to ``len(decode(s).encode("utf-8"))``. Lowering can change a letter's UTF-8 length
    ('Ⱥ' U+023A is 2 bytes, 'ⱥ' U+2C65 is 3), so the weights come from the decoded characters.
    """
    return [len(c.encode("utf-8")) for c in _decoded_chars(s)]
