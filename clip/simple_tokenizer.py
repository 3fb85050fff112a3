"""OpenAI's ``clip.simple_tokenizer.SimpleTokenizer`` API over open_clip's BPE tokenizer.

CoOp-family trainers do ``from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer`` and use
``encode`` (e.g. class-name lengths), ``decode``, ``encoder`` and ``decoder``. The vocabulary file,
the text cleaning and the BPE merges are open_clip's (the same file OpenAI ships), so the ids are
the same. The only difference from open_clip's tokenizer is the spelling of the two special tokens:
OpenAI's code looks them up as ``<|startoftext|>`` / ``<|endoftext|>``, open_clip names them
``<start_of_text>`` / ``<end_of_text>``; both have ids 49406 / 49407.
"""
from __future__ import annotations

from typing import Dict, Iterable, List

import regex
from open_clip.tokenizer import SimpleTokenizer as _OpenClipTokenizer
from open_clip.tokenizer import default_bpe

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
_OPEN_CLIP_SPECIALS = {"<start_of_text>": SOT, "<end_of_text>": EOT}

# OpenAI's split pattern: its special tokens, English contractions, letter runs, single digits,
# other symbol runs (a fact carried over so that special tokens inside a text encode like OpenAI's).
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


class SimpleTokenizer:
    """Byte-level BPE tokenizer with OpenAI's attribute names and special-token spellings.

    Attributes: ``encoder`` (token string -> id), ``decoder`` (id -> token string), ``byte_encoder``,
    ``byte_decoder``, ``bpe_ranks``; ``bpe(token)`` returns the space-joined BPE pieces of one word.
    """

    def __init__(self, bpe_path: str = default_bpe()):
        self._tok = _OpenClipTokenizer(bpe_path)
        self.byte_encoder = self._tok.byte_encoder
        self.byte_decoder = self._tok.byte_decoder
        self.bpe_ranks = self._tok.bpe_ranks
        self.encoder: Dict[str, int] = {
            _OPEN_CLIP_SPECIALS.get(token, token): idx for token, idx in self._tok.encoder.items()
        }
        self.decoder: Dict[int, str] = {idx: token for token, idx in self.encoder.items()}
        self.pat = _PATTERN

    def bpe(self, token: str) -> str:
        return self._tok.bpe(token)

    def encode(self, text: str) -> List[int]:
        """Ids of ``text`` without start/end tokens (same cleaning as OpenAI: ftfy, html, lower)."""
        ids: List[int] = []
        for word in _PATTERN.findall(self._tok.clean_fn(text)):
            if word in (SOT, EOT):
                ids.append(self.encoder[word])
                continue
            word = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(word).split(" "))
        return ids

    def decode(self, tokens: Iterable[int]) -> str:
        """Text of ``tokens``; word ends become spaces, as in OpenAI's tokenizer."""
        text = "".join(self.decoder[int(t)] for t in tokens)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")
