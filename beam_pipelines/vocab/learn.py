"""Learns a WordPiece vocabulary from (word, count) pairs, with a canonical id order.

The learner is Hugging Face ``tokenizers``' ``WordPieceTrainer`` (BPE merges turned into
WordPiece), the trainer behind the seed's ``BertWordPieceTokenizer``. Its Python API only trains
from text, so each word is replayed ``count`` times: that gives the trainer exactly the word counts
it would have computed from the text itself, hence the same token set (scaled-down counts would
not). The trainer's ids are not reproducible, so the learned tokens are then put in a canonical
order (see :func:`canonical_order`).

Memory is bounded by the number of distinct words (the caller caps it); time grows with the total
count, like training on the text.

This module has no Beam or TensorFlow import.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from beam_pipelines.vocab import tokenizer_spec

# Upper bound on the characters of one replayed string: a frequent word is replayed in chunks.
_REPLAY_CHUNK_CHARS = 1 << 20
# Words tokenized per call when measuring token frequencies.
_ENCODE_BATCH = 50_000


@dataclasses.dataclass(frozen=True)
class LearnedVocabulary:
    """The result of :func:`learn_vocabulary`.

    Attributes:
        tokens: the whole vocabulary in id order: special, unused, then learned tokens.
        num_learned: how many tokens were learned.
        alphabet_size: learned tokens of one character (``##`` not counted).
        words: distinct words learned from.
        word_occurrences: sum of their counts.
        pieces: word-pieces those occurrences split into with the vocabulary.
        unk_occurrences: occurrences that became ``[UNK]``.
        words_too_long: distinct words left out for being longer than a word can be.
        words_rare_characters: distinct words left out for holding a character outside the
            alphabet.
    """

    tokens: tuple[str, ...]
    num_learned: int
    alphabet_size: int
    words: int
    word_occurrences: int
    pieces: int
    unk_occurrences: int
    words_too_long: int
    words_rare_characters: int


def canonical_word_order(word_counts: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Sorts (word, count) pairs by count, most frequent first, then by the word's code points."""
    return sorted(word_counts, key=lambda wc: (-wc[1], wc[0]))


def replay(word_counts: Iterable[tuple[str, int]]) -> Iterator[str]:
    """Yields text in which each word occurs exactly ``count`` times, separated by spaces.

    Args:
        word_counts: (word, count) pairs; words hold no whitespace.
    """
    for word, count in word_counts:
        per_chunk = max(1, _REPLAY_CHUNK_CHARS // (len(word) + 1))
        while count > 0:
            n = min(count, per_chunk)
            yield (word + " ") * n
            count -= n


def _token_counts(
    word_counts: Sequence[tuple[str, int]], tokens: Sequence[str]
) -> tuple[dict[str, int], int, int]:
    """Tokenizes every word with ``tokens`` and counts each token's occurrences.

    Returns:
        (occurrences per token, total pieces, occurrences that became [UNK]).
    """
    tokenizer = Tokenizer(
        models.WordPiece(
            {t: i for i, t in enumerate(tokens)},
            unk_token=tokenizer_spec.UNK,
            continuing_subword_prefix=tokenizer_spec.CONTINUING_SUBWORD_PREFIX,
            max_input_chars_per_word=tokenizer_spec.MAX_INPUT_CHARS_PER_WORD,
        )
    )
    unk_id = tokens.index(tokenizer_spec.UNK)
    occurrences = [0] * len(tokens)
    pieces = unk = 0
    for start in range(0, len(word_counts), _ENCODE_BATCH):
        batch = word_counts[start : start + _ENCODE_BATCH]
        encodings = tokenizer.encode_batch([[w] for w, _ in batch], is_pretokenized=True, add_special_tokens=False)
        for (_, count), encoding in zip(batch, encodings, strict=True):
            for token_id in encoding.ids:
                occurrences[token_id] += count
            pieces += count * len(encoding.ids)
            if encoding.ids == [unk_id]:
                unk += count
    return dict(zip(tokens, occurrences, strict=True)), pieces, unk


def canonical_order(learned: Iterable[str], token_occurrences: dict[str, int]) -> list[str]:
    """Orders learned tokens: most occurrences in the tokenized training words first.

    Ties (tokens that occur equally often, e.g. never) are broken by putting word-initial tokens
    before ``##`` ones, then by code points, so the order depends only on the token set and the
    word counts.
    """
    prefix = tokenizer_spec.CONTINUING_SUBWORD_PREFIX
    return sorted(
        learned,
        key=lambda t: (-token_occurrences.get(t, 0), t.startswith(prefix), t),
    )


def select_alphabet(word_counts: Iterable[tuple[str, int]], limit: int) -> set[str]:
    """Returns the ``limit`` most frequent characters (ties broken by code point)."""
    counts: Counter[str] = Counter()
    for word, count in word_counts:
        for ch in word:
            counts[ch] += count
    ranked = sorted(counts.items(), key=lambda cc: (-cc[1], cc[0]))
    return {ch for ch, _ in ranked[:limit]}


def learn_vocabulary(
    word_counts: Iterable[tuple[str, int]],
    *,
    vocab_size: int,
    num_unused: int = 0,
    min_pair_count: int = 2,
    limit_alphabet: int = 1000,
    spare_fraction: float = 1 / 16,
) -> LearnedVocabulary:
    """Learns a WordPiece vocabulary of exactly ``vocab_size`` tokens.

    The trainer merges pairs like BPE, and many of its tokens are only steps towards longer ones
    that WordPiece's longest-match-first never picks. So it is asked for ``spare_fraction`` more
    tokens than needed; the surplus is then dropped, least used first (occurrences when the
    training words are tokenized; single characters are always kept, so every word over the
    alphabet stays tokenizable).

    Words longer than the tokenizer accepts (100 characters) and words holding one of the
    characters outside the ``limit_alphabet`` most frequent ones are left out: the tokenizer can
    only make ``[UNK]`` of them.

    The trainer breaks ties between equally frequent pairs by token id, and gives the ``##c``
    tokens ids in the order it meets the words (a hash map's order, different every run). Giving
    it every ``##c`` token up front, sorted, makes its ids (hence every tie, hence the token set)
    reproducible; these are the tokens it would have created itself.

    Args:
        word_counts: (word, count) pairs of normalized, pre-tokenized words, any order, each word
            once.
        vocab_size: total entries, special and unused tokens included.
        num_unused: ``[unusedN]`` entries reserved after the special tokens.
        min_pair_count: a pair of pieces is merged only if it occurs at least this often.
        limit_alphabet: at most this many distinct characters start the vocabulary.
        spare_fraction: how many more tokens to learn before dropping the least used, as a
            fraction of the learned part of the vocabulary.

    Returns:
        The vocabulary in canonical id order, with statistics.

    Raises:
        ValueError: if the words cannot give exactly ``vocab_size`` tokens, naming the flag.
    """
    reserved = tokenizer_spec.reserved_tokens(num_unused)
    target = vocab_size - len(reserved)
    if target < 1:
        raise ValueError(f"--vocab_size {vocab_size} leaves no room after {len(reserved)} reserved tokens")
    ordered = canonical_word_order(word_counts)
    short = [(w, c) for w, c in ordered if len(w) <= tokenizer_spec.MAX_INPUT_CHARS_PER_WORD]
    alphabet = select_alphabet(short, limit_alphabet)
    usable = [(w, c) for w, c in short if all(ch in alphabet for ch in w)]
    if not usable:
        raise ValueError("no words to learn a vocabulary from (empty input, or every word below --min_count)")
    prefix = tokenizer_spec.CONTINUING_SUBWORD_PREFIX
    continuing = sorted({prefix + ch for w, _ in usable for ch in w[1:]})
    if len(alphabet) + len(continuing) > target:
        raise ValueError(
            f"--vocab_size {vocab_size} is too small: the alphabet alone needs "
            f"{len(alphabet) + len(continuing) + len(reserved)} entries; raise --vocab_size or lower --limit_alphabet"
        )

    trainer = trainers.WordPieceTrainer(
        vocab_size=target + int(target * spare_fraction),
        min_frequency=min_pair_count,
        show_progress=False,
        special_tokens=continuing,
        continuing_subword_prefix=prefix,
    )
    # The words are already normalized and pre-tokenized: the learner only splits the replay.
    learner = Tokenizer(models.WordPiece(unk_token=tokenizer_spec.UNK))
    learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    learner.train_from_iterator(replay(usable), trainer=trainer)
    learned = sorted(set(learner.get_vocab()) - set(reserved))
    if len(learned) < target:
        raise ValueError(
            f"--vocab_size {vocab_size}: the input gives only {len(learned)} learnable tokens, "
            f"so the vocabulary can have at most {len(learned) + len(reserved)} entries; "
            "lower --vocab_size or --min_count, or give more text"
        )
    if len(learned) > target:
        occurrences, _, _ = _token_counts(ordered, reserved + learned)
        droppable = [t for t in learned if len(t.removeprefix(prefix)) > 1]
        dropped = set(sorted(droppable, key=lambda t: (occurrences[t], t))[: len(learned) - target])
        learned = [t for t in learned if t not in dropped]
    occurrences, pieces, unk = _token_counts(ordered, reserved + learned)
    tokens = tuple(reserved + canonical_order(learned, occurrences))
    return LearnedVocabulary(
        tokens=tokens,
        num_learned=len(learned),
        alphabet_size=len(alphabet),
        words=len(ordered),
        word_occurrences=sum(c for _, c in ordered),
        pieces=pieces,
        unk_occurrences=unk,
        words_too_long=len(ordered) - len(short),
        words_rare_characters=len(short) - len(usable),
    )
