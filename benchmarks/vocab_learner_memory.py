"""Memory and time of the one-worker learner against the number of distinct words it gets.

Makes ``--words`` distinct pseudo-Hindi words (random syllables) with Zipf-like counts, then runs
:func:`beam_pipelines.vocab.learn.learn_vocabulary` on them in a fresh process and reports wall
time and peak RSS. This is the bound that ``--max_words`` sets on the stage's single worker. Run::

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.vocab_learner_memory --words 250000,1000000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

_CONSONANTS = [chr(c) for c in range(0x0915, 0x0939)]
_SIGNS = ["", "\u093e", "\u093f", "\u0940", "\u0941", "\u0942", "\u0947", "\u0948", "\u094b", "\u094c", "\u0902", "\u094d"]


def pseudo_words(n: int, seed: int = 1) -> list[tuple[str, int]]:
    """``n`` distinct words of 1-5 random syllables; the i-th most frequent occurs ~ 1e7 / (i + 10) times."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choice(_CONSONANTS) + rng.choice(_SIGNS) for _ in range(rng.randint(1, 5)))] = None
    return [(w, max(1, 10_000_000 // (i + 10))) for i, w in enumerate(words)]


def _child(n: int, vocab_size: int) -> None:
    from beam_pipelines.vocab import learn

    word_counts = pseudo_words(n)
    start = time.perf_counter()
    learned = learn.learn_vocabulary(word_counts, vocab_size=vocab_size)
    print(json.dumps({
        "distinct_words": n,
        "word_occurrences": learned.word_occurrences,
        "learn_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(int(argv[1]), int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", default="250000,1000000")
    parser.add_argument("--vocab_size", type=int, default=32000)
    args = parser.parse_args(argv)
    for n in args.words.split(","):
        cmd = [sys.executable, "-m", "benchmarks.vocab_learner_memory", "--child", n, str(args.vocab_size)]
        print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
