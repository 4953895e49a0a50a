"""CaseOps: #1729's bijective case transform, ``lossless_caps_caseops_v1`` as #1855 runs it (docs/record.md §8.4).

``encode`` lowercases ASCII words and writes their capitalization as four operator characters,
which the tokenizer keeps as SentencePiece user-defined symbols (ids 4-7 after pad/BOS/EOS/UNK,
as in the record's shipped ``fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model``):

| symbol  | char   | written                                                          |
|---------|--------|------------------------------------------------------------------|
| TITLE   | U+E001 | before a word whose first letter is upper case (and not ALLCAPS) |
| ALLCAPS | U+E002 | before a word of two or more letters, all upper case             |
| CAPNEXT | U+E003 | before each later upper-case letter of a mixed-case word         |
| ESC     | U+E004 | before an operator character found in the input                  |

A word is a maximal run of ASCII letters A-Z, a-z; nothing else is cased ("É" stays as it is).
"McDonald" is TITLE m c CAPNEXT d o n a l d. ``decode(encode(s)) == s`` for every string.

BPB is charged on the original text: ``original_bytes`` gives, per character of the encoded
text, the UTF-8 bytes of the original character it stands for (0 for an operator), which
``golf.tokenizer`` sums per token into the val byte sidecar.
"""
from __future__ import annotations

import re

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)
_WORD_OR_OPERATOR = re.compile("([A-Za-z]+)|([\ue001-\ue004])")


def _encode_word(w: str) -> str:
    if w.islower():
        return w
    low = w.lower()
    if len(w) >= 2 and w.isupper():
        return ALLCAPS + low
    head = TITLE if w[0].isupper() else ""
    if head and len(w) >= 2 and w[1:].islower():
        return head + low
    return head + low[0] + "".join(CAPNEXT + c.lower() if c.isupper() else c for c in w[1:])


def _encode_match(m: re.Match) -> str:
    return _encode_word(m.group(1)) if m.group(1) else ESC + m.group(2)


def encode(text: str) -> str:
    """Lowercase the ASCII words of ``text``, writing their capitalization as operators."""
    return _WORD_OR_OPERATOR.sub(_encode_match, text)


def _is_letter(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z")


def _decoded_chars(s: str) -> list[str]:
    """Per character of ``s``, the original character it stands for ("" for an operator).

    Raises ValueError where ``s`` is not something ``encode`` makes.
    """
    out: list[str] = []
    upper_next = allcaps = in_word = False
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        nxt = s[i + 1] if i + 1 < n else ""
        if c == ESC:
            if not nxt:
                raise ValueError(f"caseops: ESC at {i} ends the text")
            out += ["", nxt]
            upper_next = allcaps = in_word = False
            i += 2
            continue
        if c in (TITLE, ALLCAPS, CAPNEXT):
            starts_word = c != CAPNEXT
            if upper_next or not _is_letter(nxt) or (starts_word and in_word):
                raise ValueError(f"caseops: operator U+{ord(c):04X} at {i} is misplaced")
            if c == ALLCAPS:
                allcaps = True
            else:
                upper_next = True
            out.append("")
        elif _is_letter(c):
            out.append(c.upper() if upper_next or allcaps else c)
            upper_next, in_word = False, True
        else:
            out.append(c)
            allcaps = in_word = False
        i += 1
    return out


def decode(s: str) -> str:
    """The inverse of ``encode``: ``decode(encode(t)) == t`` for every string ``t``."""
    return "".join(_decoded_chars(s))


def original_bytes(s: str) -> list[int]:
    """Per character of the encoded ``s``: UTF-8 bytes of the original character (0 for operators).

    Sums to ``len(decode(s).encode("utf-8"))``.
    """
    return [len(c.encode("utf-8")) for c in _decoded_chars(s)]
