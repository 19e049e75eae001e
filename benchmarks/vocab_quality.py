"""Quality of the learned vocabulary against the seed's, on held-out Hindi text.

Learns two WordPiece vocabularies of the same size from the same text (the shared corpus'
``documents/`` files, except the noisy ones):

- seed: ``tokenizers.BertWordPieceTokenizer(lowercase=False, strip_accents=False)`` trained on the
  text with ``min_frequency=2`` (the seed's method);
- ours: word counts made with the stage's normalizer and pre-tokenizer, filtered by
  ``--min_count``, then :func:`beam_pipelines.vocab.learn.learn_vocabulary` (characters counted
  over every word, as the stage does).

Then tokenizes the held-out ``sentences/`` files with both and reports word-pieces per word and the
share of words that become ``[UNK]``, side by side. Run::

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.vocab_quality --vocab_size 32000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from tokenizers import BertWordPieceTokenizer, Tokenizer

from beam_pipelines.vocab import learn, tokenizer_spec

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "hi"


def training_files(corpus: Path) -> list[Path]:
    """The learning side: every ``documents/`` file (the noisy folder is not used)."""
    return sorted((corpus / "documents").glob("*.txt"))


def held_out_files(corpus: Path) -> list[Path]:
    """The held-out side: every ``sentences/`` file."""
    return sorted((corpus / "sentences").glob("*.txt"))


def count_words(files: list[Path]) -> Counter[str]:
    """Counts words with the stage's normalizer and pre-tokenizer (plain Python)."""
    splitter = tokenizer_spec.WordSplitter()
    counts: Counter[str] = Counter()
    for path in files:
        with path.open(encoding="utf-8") as f:
            for line in f:
                counts.update(splitter.split(line))
    return counts


def learn_seed(files: list[Path], vocab_size: int) -> Tokenizer:
    """The seed's method: HF ``BertWordPieceTokenizer`` trained on the text, cased, min_frequency 2."""
    seed = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    seed.train([str(f) for f in files], vocab_size=vocab_size, min_frequency=2, show_progress=False)
    return seed._tokenizer


def split_quality(tokenizer: Tokenizer, lines: list[str]) -> dict[str, float]:
    """Word-pieces per word and [UNK] rate of ``tokenizer`` on ``lines``.

    A word is what the tokenizer's own pre-tokenizer makes (BERT's whitespace/punctuation split
    for both tokenizers compared here); a word that WordPiece cannot cover becomes one [UNK].
    """
    unk_id = tokenizer.token_to_id(tokenizer_spec.UNK)
    words = pieces = unk = 0
    for start in range(0, len(lines), 2000):
        for enc in tokenizer.encode_batch(lines[start : start + 2000], add_special_tokens=False):
            words += len({w for w in enc.word_ids if w is not None})
            pieces += len(enc.ids)
            unk += sum(1 for i in enc.ids if i == unk_id)
    return {
        "words": words,
        "pieces": pieces,
        "pieces_per_word": pieces / words,
        "unk_rate": unk / words,
    }


def run(corpus: Path, vocab_size: int, min_counts: list[int]) -> dict[str, object]:
    """Learns the seed's and our vocabularies and measures both on the held-out text."""
    train = training_files(corpus)
    held = [line for f in held_out_files(corpus) for line in f.read_text(encoding="utf-8").splitlines() if line]
    results: dict[str, object] = {
        "vocab_size": vocab_size,
        "training_files": [f.name for f in train],
        "training_bytes": sum(f.stat().st_size for f in train),
        "held_out_files": [f.name for f in held_out_files(corpus)],
        "held_out_lines": len(held),
    }
    start = time.perf_counter()
    seed = learn_seed(train, vocab_size)
    results["seed"] = {"learn_s": round(time.perf_counter() - start, 2), **split_quality(seed, held)}

    counts = count_words(train)
    results["distinct_words"] = len(counts)
    alphabet = learn.count_alphabet(counts.items())  # from every word, as the stage does
    for min_count in min_counts:
        kept = [(w, c) for w, c in counts.items() if c >= min_count]
        start = time.perf_counter()
        try:
            learned = learn.learn_vocabulary(kept, vocab_size=vocab_size, alphabet_counts=alphabet)
        except ValueError as e:
            results[f"ours_min_count_{min_count}"] = {"error": str(e)}
            continue
        elapsed = time.perf_counter() - start
        ours = tokenizer_spec.build_tokenizer(learned.tokens)
        quality = split_quality(ours, held)
        seed_ppw = results["seed"]["pieces_per_word"]
        results[f"ours_min_count_{min_count}"] = {
            "learn_s": round(elapsed, 2),
            "words_learned_from": len(kept),
            **quality,
            "pieces_per_word_vs_seed": quality["pieces_per_word"] / seed_ppw - 1.0,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the shared corpus folder (hi)")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--min_counts", default="1,2,3", help="comma-separated --min_count values to try")
    args = parser.parse_args(argv)
    if not (args.corpus / "documents").is_dir():
        parser.error(f"--corpus {args.corpus} has no documents/ folder")
    results = run(args.corpus, args.vocab_size, [int(x) for x in args.min_counts.split(",")])
    json.dump(results, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
