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
from collections.abc import Iterable, Iterator, Mapping, Sequence

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


def count_alphabet(word_counts: Iterable[tuple[str, int]]) -> Counter[str]:
    """Counts one-character pieces: ``c`` for a word's first character, ``##c`` for the others.

    Words longer than the tokenizer accepts are skipped (they can only be [UNK]).
    """
    prefix = tokenizer_spec.CONTINUING_SUBWORD_PREFIX
    counts: Counter[str] = Counter()
    for word, count in word_counts:
        if not word or len(word) > tokenizer_spec.MAX_INPUT_CHARS_PER_WORD:
            continue
        counts[word[0]] += count
        for ch in word[1:]:
            counts[prefix + ch] += count
    return counts


def select_alphabet(piece_counts: Mapping[str, int], limit: int) -> tuple[list[str], list[str]]:
    """Picks the characters the vocabulary starts from.

    Args:
        piece_counts: counts from :func:`count_alphabet` (summed over any number of words).
        limit: how many characters to keep.

    Returns:
        (characters, continuation tokens): the ``limit`` most frequent characters, both positions
        counted, ties broken by code point; and ``##c`` for each kept ``c`` seen inside a word.
        Both sorted.
    """
    totals: Counter[str] = Counter()
    for piece, count in piece_counts.items():
        totals[piece[-1]] += count
    ranked = sorted(totals.items(), key=lambda cc: (-cc[1], cc[0]))
    characters = sorted(ch for ch, _ in ranked[:limit])
    kept = set(characters)
    continuing = sorted(p for p, c in piece_counts.items() if len(p) > 1 and c > 0 and p[-1] in kept)
    return characters, continuing


def learn_vocabulary(
    word_counts: Iterable[tuple[str, int]],
    *,
    vocab_size: int,
    num_unused: int = 0,
    min_pair_count: int = 2,
    limit_alphabet: int = 1000,
    spare_fraction: float = 1 / 16,
    alphabet_counts: Iterable[tuple[str, int]] | Mapping[str, int] | None = None,
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
    tokens ids in the order it meets the words (a hash map's order, different every run), and
    cuts its alphabet at ``limit_alphabet`` with ties in any order. Choosing the alphabet here
    (ties by code point) and giving the trainer every character and every ``##c`` token up
    front, sorted, makes its ids (hence every tie, hence the token set) reproducible; these are
    the tokens it would have created itself.

    Args:
        word_counts: (word, count) pairs of normalized, pre-tokenized words, any order, each word
            once.
        vocab_size: total entries, special and unused tokens included.
        num_unused: ``[unusedN]`` entries reserved after the special tokens.
        min_pair_count: a pair of pieces is merged only if it occurs at least this often.
        limit_alphabet: at most this many distinct characters start the vocabulary.
        spare_fraction: how many more tokens to learn before dropping the least used, as a
            fraction of the learned part of the vocabulary.
        alphabet_counts: :func:`count_alphabet` over all words, rare ones included, so that
            characters seen only in words below the minimum count still get a token (as they
            do when the seed's method learns from the whole text); default: counted from
            ``word_counts``.

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
    if alphabet_counts is None:
        alphabet_counts = count_alphabet(short)
    characters, continuing = select_alphabet(dict(alphabet_counts), limit_alphabet)
    alphabet = set(characters)
    usable = [(w, c) for w, c in short if all(ch in alphabet for ch in w)]
    if not usable:
        raise ValueError("no words to learn a vocabulary from (empty input, or every word below --min_count)")
    prefix = tokenizer_spec.CONTINUING_SUBWORD_PREFIX
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
        initial_alphabet=characters,
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
