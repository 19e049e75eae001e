"""Fixtures of the pretraining tests: a Hindi workspace (corpus shards + vocabulary) and its tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pretraining import helpers

# About 1.3 MB of real Hindi: a novel, speeches and blog posts (documents of several sizes).
SUBSET = {
    "devdas_novel_hi.txt": None,
    "mann_ki_baat_hi.txt": 15,
    "online_hindi_blogs_hi.txt": 80,
    "hindi_discourse_stories_hi.txt": 10,
}


@pytest.fixture(scope="session")
def hindi_docs(shared_corpus: Path) -> list[list[str]]:
    docs: list[list[str]] = []
    for name, limit in SUBSET.items():
        part = helpers.read_documents([shared_corpus / "documents" / name])
        docs.extend(part if limit is None else part[:limit])
    return docs


@pytest.fixture(scope="session")
def hindi_workspace(tmp_path_factory, hindi_docs) -> Path:
    """``OUT`` with ``corpus/`` (3 shards per split), ``vocab/`` (8,000 tokens, 10 unused) and ``reports/corpus.json``."""
    out = tmp_path_factory.mktemp("hindi_out")
    counts = helpers.write_corpus(out, hindi_docs, num_shards=3, validation_every=8)
    helpers.write_vocab(out, hindi_docs, vocab_size=8000, num_unused=10)
    helpers.write_corpus_report(out, counts)
    return out


@pytest.fixture(scope="session")
def hindi_vocab(hindi_workspace):
    from beam_pipelines.pretraining.transforms import load_vocab

    return load_vocab(str(hindi_workspace / "vocab" / "vocab.txt"), str(hindi_workspace / "vocab" / "tokenizer.json"))


@pytest.fixture(scope="session")
def hindi_token_docs(hindi_workspace, hindi_docs) -> list[list[list[int]]]:
    """The subset's documents as lists of sentences of token ids (empty sentences dropped)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hindi_workspace / "vocab" / "tokenizer.json"))
    out = []
    for doc in hindi_docs:
        sentences = [e.ids for e in tok.encode_batch(doc, add_special_tokens=False) if e.ids]
        if sentences:
            out.append(sentences)
    return out
