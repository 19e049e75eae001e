"""Helpers for the vocab stage's tests: corpus-format inputs and a stage runner."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from beam_pipelines import build

# Real Hindi words to build a synthetic corpus from when the shared corpus is absent.
_HINDI_WORDS = (
    "भारत हिन्दी भाषा में कुछ शब्द हैं और यह एक देश है जिसकी राजधानी नई दिल्ली है लोग गाँव शहर पानी "
    "किताब पढ़ना लिखना सरकार विद्यालय बच्चे स्वतंत्रता संविधान प्रधानमंत्री राष्ट्रपति अर्थव्यवस्था "
    "विज्ञान प्रौद्योगिकी इतिहास संस्कृति परंपरा त्योहार दीवाली होली संगीत कविता कहानी उपन्यास "
    "मैं तुम हम वे उन्होंने कहा था थी थे रहा रही रहे गया गई गए करना करते करती किया"
).split()


def synthetic_documents(num_docs: int = 120, seed: int = 7) -> list[list[str]]:
    """Documents of Hindi-looking sentences, deterministic for ``seed``."""
    rng = random.Random(seed)
    docs = []
    for _ in range(num_docs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(_HINDI_WORDS) for _ in range(rng.randint(4, 14))]
            sentences.append(" ".join(words) + rng.choice(["।", "?", "!", "।"]))
        docs.append(sentences)
    return docs


def read_documents(path: Path, limit: int | None = None) -> list[list[str]]:
    """Reads a ``documents/`` file of the shared corpus into lists of lines."""
    docs = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.split("\n") if line.strip()]
        if lines:
            docs.append(lines)
    return docs[:limit]


def write_corpus(corpus_dir: Path, documents: list[list[str]], num_files: int = 2) -> list[Path]:
    """Writes documents as ``train-SSSSS-of-NNNNN.txt.gz`` (docs/data_format.md), round-robin."""
    corpus_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_files):
        path = corpus_dir / f"train-{i:05d}-of-{num_files:05d}.txt.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for doc in documents[i::num_files]:
                f.write("\n".join(doc) + "\n\n")
        paths.append(path)
    return paths


def run_vocab_stage(output_dir: Path, flags: list[str], beam_args: list[str] | None = None) -> dict:
    """Runs the vocab stage through ``beam_pipelines.build`` and returns its report."""
    argv = ["--stages", "vocab", "--output_dir", str(output_dir), *flags, *(beam_args or [])]
    return build.run(argv)["vocab"]


@pytest.fixture(scope="session")
def hindi_documents(shared_corpus: Path) -> list[list[str]]:
    """Real Hindi documents: two files of the shared corpus (about 2.3 MB)."""
    docs = read_documents(shared_corpus / "documents" / "devdas_novel_hi.txt")
    docs += read_documents(shared_corpus / "documents" / "hindi_discourse_stories_hi.txt")
    return docs


@pytest.fixture(scope="session")
def hindi_sentences(shared_corpus: Path) -> list[str]:
    """Real Hindi sentences not used for learning (held out)."""
    lines = (shared_corpus / "sentences" / "tico19_test_hi.txt").read_text(encoding="utf-8").splitlines()
    lines += (shared_corpus / "sentences" / "tatoeba_test_hin.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]
