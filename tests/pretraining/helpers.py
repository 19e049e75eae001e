"""Builds the pretraining stage's inputs for tests and benchmarks: corpus shards and a vocabulary.

The tokenizer is made the way the vocab stage makes it (WordPiece, NFC normalizer,
BertPreTokenizer, no lowercasing, no accent stripping, special tokens first).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def read_documents(paths: Sequence[Path]) -> list[list[str]]:
    """Documents (lists of non-empty lines) of files with a blank line between documents."""
    docs: list[list[str]] = []
    for path in paths:
        current: list[str] = []
        for line in Path(path).read_text(encoding="utf-8").split("\n"):
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                docs.append(current)
                current = []
        if current:
            docs.append(current)
    return docs


def write_corpus(out_dir: Path, documents: Sequence[Sequence[str]], *, num_shards: int = 4,
                 validation_every: int = 10) -> dict[str, int]:
    """Writes ``corpus/{train,validation}-SSSSS-of-NNNNN.txt.gz`` as the corpus stage does.

    A document goes to validation when a hash of its text is 0 modulo ``validation_every``.
    Returns the number of documents per split.
    """
    corpus = Path(out_dir) / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    shards: dict[str, list[list[str]]] = {"train": [[] for _ in range(num_shards)],
                                          "validation": [[] for _ in range(num_shards)]}
    for doc in documents:
        h = int.from_bytes(hashlib.sha1("\n".join(doc).encode()).digest()[:8], "little")
        split = "validation" if h % validation_every == 0 else "train"
        shards[split][(h // validation_every) % num_shards].append("\n".join(doc) + "\n\n")
    counts = {}
    for split, parts in shards.items():
        counts[split] = sum(len(p) for p in parts)
        for i, part in enumerate(parts):
            data = "".join(part).encode("utf-8")
            with open(corpus / f"{split}-{i:05d}-of-{num_shards:05d}.txt.gz", "wb") as f:
                f.write(gzip.compress(data, mtime=0))
    return counts


def write_vocab(out_dir: Path, documents: Sequence[Sequence[str]], *, vocab_size: int = 8000,
                num_unused: int = 0) -> Path:
    """Trains a WordPiece vocabulary on ``documents``; writes ``vocab/{vocab.txt,tokenizer.json}``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = SPECIALS + [f"[unused{i}]" for i in range(num_unused)]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                        continuing_subword_prefix="##", show_progress=False)
    tokenizer.train_from_iterator((line for doc in documents for line in doc), trainer=trainer)
    vocab_dir = Path(out_dir) / "vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    # Canonical ids: the trainer's order is not reproducible, so specials first, then sorted.
    learned = sorted(t for t in tokenizer.get_vocab() if t not in specials)
    tokens = specials + learned
    model = models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]",
                             continuing_subword_prefix="##", max_input_chars_per_word=100)
    final = Tokenizer(model)
    final.normalizer = normalizers.NFC()
    final.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    final.save(str(vocab_dir / "tokenizer.json"))
    (vocab_dir / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return vocab_dir


def write_corpus_report(out_dir: Path, counts: dict[str, int]) -> None:
    reports = Path(out_dir) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    kept = sum(counts.values())
    (reports / "corpus.json").write_text(json.dumps({
        "records_read": kept + 3, "records_malformed": 1, "documents_kept": kept,
        "documents_dropped": {"too_short": 2}}))
