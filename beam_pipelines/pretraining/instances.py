"""Training instances of google-research/bert ``create_pretraining_data.py``, on token ids.

Pure Python: no Beam, no TensorFlow. A document is a list of sentences, a sentence a
list of token ids. ``create_instances_from_document`` follows the reference step by
step and draws from ``rng`` in the same order, so the reference's run is reproduced by
``create_training_instances`` with ``reference_compatible=True`` and a masking spec
whose random pool is the whole vocabulary.

One difference from the reference (docs/pretraining.md): when the "random" B was drawn
from the document of A itself (possible only in a bucket with very few documents),
the instance is labelled 0 (not random), because B then is no sample of another
document; the reference labels it 1 anyway.

``create_packed_instances`` is the MLM-only packing (``--no_nsp``): contiguous
text fills whole sequences, crossing document boundaries with a [SEP].
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from beam_pipelines.pretraining.masking import MaskingSpec, create_masked_lm_predictions

Document = Sequence[Sequence[int]]

_NSP_TRIES = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Instance:
    """One training sequence.

    Attributes:
        tokens: ids after masking: [CLS] A [SEP] B [SEP] (or [CLS] text [SEP] when packed).
        num_segment_a: tokens with segment id 0 ([CLS], A and the first [SEP]); the rest
            have segment id 1.
        masked_positions: ascending target positions.
        masked_ids: original ids at those positions.
        is_random_next: 1 when B comes from another document.
        target_seq_length: the drawn target length (less than the maximum for short ones).
        single_segment_chunk: the chunk had one sentence, so B was random by necessity.
    """

    tokens: list[int]
    num_segment_a: int
    masked_positions: list[int]
    masked_ids: list[int]
    is_random_next: int
    target_seq_length: int
    single_segment_chunk: bool = False


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Drops tokens from the longer side, front or back at random, until the pair fits."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def create_instances_from_document(
    documents: Sequence[Document],
    document_index: int,
    *,
    max_seq_length: int,
    short_seq_prob: float,
    masking: MaskingSpec,
    rng: random.Random,
    reference_compatible: bool = False,
) -> list[Instance]:
    """Creates the NSP instances of one document, as the reference does.

    Args:
        documents: every document NSP negatives may come from (a bucket).
        document_index: the document to cut into instances.
        max_seq_length: the sequence length, [CLS] and two [SEP] included.
        short_seq_prob: probability of a shorter random target length.
        masking: the masking options.
        rng: the random source.
        reference_compatible: label a B drawn from the same document "random", as the
            reference does (for comparisons only).

    Returns:
        The document's instances in order.
    """
    document = documents[document_index]
    cls_id, sep_id = masking.cls_id, masking.sep_id
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances: list[Instance] = []
    current_chunk: list[Sequence[int]] = []
    current_length = 0
    n_docs = len(documents)
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a: list[int] = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])

                tokens_b: list[int] = []
                single = len(current_chunk) == 1
                if single or rng.random() < 0.5:
                    is_random_next = 1
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(_NSP_TRIES):
                        random_document_index = rng.randint(0, n_docs - 1)
                        if random_document_index != document_index:
                            break
                    if random_document_index == document_index and not reference_compatible:
                        is_random_next = 0
                    random_document = documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The unused sentences of the chunk are put back.
                    i -= len(current_chunk) - a_end
                else:
                    is_random_next = 0
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                if not tokens_a or not tokens_b:
                    raise ValueError(
                        f"empty segment in document {document_index}: every sentence must have a token"
                    )
                tokens = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
                output, positions, labels = create_masked_lm_predictions(tokens, masking, rng)
                instances.append(
                    Instance(
                        tokens=output,
                        num_segment_a=len(tokens_a) + 2,
                        masked_positions=positions,
                        masked_ids=labels,
                        is_random_next=is_random_next,
                        target_seq_length=target_seq_length,
                        single_segment_chunk=single,
                    )
                )
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def create_training_instances(
    documents: Sequence[Document],
    *,
    max_seq_length: int,
    dupe_factor: int,
    short_seq_prob: float,
    masking: MaskingSpec,
    rng: random.Random,
    reference_compatible: bool = False,
) -> list[Instance]:
    """The reference's whole run over one pool of documents: shuffle, dupe passes, shuffle.

    Empty documents are dropped first, as in the reference. Used to compare with the
    reference; the pipeline calls ``create_instances_from_document`` per bucket.
    """
    docs = [d for d in documents if d]
    rng.shuffle(docs)
    instances: list[Instance] = []
    for _ in range(dupe_factor):
        for index in range(len(docs)):
            instances.extend(
                create_instances_from_document(
                    docs,
                    index,
                    max_seq_length=max_seq_length,
                    short_seq_prob=short_seq_prob,
                    masking=masking,
                    rng=rng,
                    reference_compatible=reference_compatible,
                )
            )
    rng.shuffle(instances)
    return instances


def create_packed_instances(
    documents: Sequence[Document],
    *,
    max_seq_length: int,
    short_seq_prob: float,
    masking: MaskingSpec,
    rng: random.Random,
) -> list[Instance]:
    """MLM-only instances: [CLS] contiguous sentences [SEP], documents joined by [SEP].

    The token stream of the documents (in the given order) fills each sequence up to the
    target length (``max_seq_length - 2``, or with probability ``short_seq_prob`` a random
    length from 2), so a sentence may continue in the next sequence; a document boundary
    inside a sequence is one [SEP]. Segment ids are all 0, labels 0.
    """
    cls_id, sep_id = masking.cls_id, masking.sep_id
    max_num_tokens = max_seq_length - 2

    def draw_target() -> int:
        if rng.random() < short_seq_prob:
            return rng.randint(2, max_num_tokens)
        return max_num_tokens

    instances: list[Instance] = []
    current: list[int] = []
    target = draw_target()

    def emit() -> None:
        nonlocal current, target
        while current and current[-1] == sep_id:
            current.pop()
        if current:
            tokens = [cls_id, *current, sep_id]
            output, positions, labels = create_masked_lm_predictions(tokens, masking, rng)
            instances.append(
                Instance(
                    tokens=output,
                    num_segment_a=len(tokens),
                    masked_positions=positions,
                    masked_ids=labels,
                    is_random_next=0,
                    target_seq_length=target,
                )
            )
        current = []
        target = draw_target()

    for document in documents:
        if current:
            if len(current) + 1 < target:
                current.append(sep_id)
            else:
                emit()
        for sentence in document:
            rest = list(sentence)
            while rest:
                room = target - len(current)
                current.extend(rest[:room])
                rest = rest[room:]
                if len(current) >= target:
                    emit()
    emit()
    return instances
