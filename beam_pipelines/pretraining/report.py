"""Statistics of the pretraining data: accumulated per bucket, merged, written as JSON and PNGs.

Pure Python and numpy (matplotlib only in ``write_plots``).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable

import numpy as np

from beam_pipelines.pretraining.instances import Instance


@dataclasses.dataclass
class SplitStats:
    """Counts of one split. Arrays are indexed by length, count or token id."""

    instances: int = 0
    documents: int = 0
    sentences: int = 0
    input_tokens: int = 0
    seq_lengths: np.ndarray | None = None  # [max_seq_length + 1]
    masked_counts: np.ndarray | None = None  # [max_predictions_per_seq + 1]
    nsp_labels: np.ndarray | None = None  # [2]
    single_segment_chunks: int = 0
    short_targets: int = 0
    mask_decisions: np.ndarray | None = None  # [3]: [MASK], random, unchanged
    token_counts: np.ndarray | None = None  # [vocab_size], over the input documents

    @classmethod
    def empty(cls, *, max_seq_length: int, max_predictions_per_seq: int, vocab_size: int) -> SplitStats:
        return cls(
            seq_lengths=np.zeros(max_seq_length + 1, np.int64),
            masked_counts=np.zeros(max_predictions_per_seq + 1, np.int64),
            nsp_labels=np.zeros(2, np.int64),
            mask_decisions=np.zeros(3, np.int64),
            token_counts=np.zeros(vocab_size, np.int64),
        )

    def add_instances(self, instances: Iterable[Instance], *, mask_id: int, max_num_tokens: int) -> None:
        """Counts lengths, targets, labels and the replacement of each target."""
        seq = self.seq_lengths
        masked = self.masked_counts
        nsp = self.nsp_labels
        decisions = self.mask_decisions
        for inst in instances:
            self.instances += 1
            tokens = inst.tokens
            seq[len(tokens)] += 1
            masked[len(inst.masked_positions)] += 1
            nsp[inst.is_random_next] += 1
            self.single_segment_chunks += inst.single_segment_chunk
            self.short_targets += inst.target_seq_length < max_num_tokens
            for pos, orig in zip(inst.masked_positions, inst.masked_ids, strict=True):
                out = tokens[pos]
                if out == mask_id:
                    decisions[0] += 1
                elif out == orig:
                    decisions[2] += 1
                else:
                    decisions[1] += 1

    def merge(self, other: SplitStats) -> SplitStats:
        merged = SplitStats()
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a is None:
                value = b
            elif b is None:
                value = a
            else:
                value = a + b
            setattr(merged, f.name, value)
        return merged


def _share(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def split_summary(stats: SplitStats, *, tokens: tuple[str, ...], unk_id: int,
                  special_ids: Iterable[int], top_k: int = 50) -> dict:
    """A JSON-ready summary of one split."""
    n = stats.instances
    lengths = stats.seq_lengths
    masked = stats.masked_counts
    idx = np.arange(len(lengths))
    counts = stats.token_counts.copy()
    total_tokens = int(counts.sum())
    unk = int(counts[unk_id]) if total_tokens else 0
    for i in special_ids:
        counts[i] = 0
    top = np.argsort(-counts, kind="stable")[:top_k]
    decisions = stats.mask_decisions
    n_targets = int(decisions.sum())
    return {
        "instances": n,
        "documents": stats.documents,
        "sentences": stats.sentences,
        "input_tokens": total_tokens,
        "unk_tokens": unk,
        "unk_share": _share(unk, total_tokens),
        "mean_seq_length": _share(float((lengths * idx).sum()), n),
        "full_length_share": _share(int(lengths[-1]), n),
        "short_target_share": _share(stats.short_targets, n),
        "seq_length_histogram": {str(i): int(c) for i, c in enumerate(lengths) if c},
        "masked_count_histogram": {str(i): int(c) for i, c in enumerate(masked) if c},
        "mean_masked": _share(float((masked * np.arange(len(masked))).sum()), n),
        "nsp": {
            "actual_next": int(stats.nsp_labels[0]),
            "random_next": int(stats.nsp_labels[1]),
            "random_share": _share(int(stats.nsp_labels[1]), n),
            "single_sentence_chunks": stats.single_segment_chunks,
        },
        "mask_decisions": {
            "mask": int(decisions[0]),
            "random": int(decisions[1]),
            "unchanged": int(decisions[2]),
            "mask_share": _share(int(decisions[0]), n_targets),
            "random_share": _share(int(decisions[1]), n_targets),
            "unchanged_share": _share(int(decisions[2]), n_targets),
        },
        "top_tokens": [[tokens[i], int(counts[i])] for i in top if counts[i]],
    }


def write_plots(summaries: dict[str, dict], *, max_seq_length: int, max_predictions_per_seq: int) -> dict[str, bytes]:
    """Draws the report's PNGs; returns ``{file name: png bytes}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        return buf.getvalue()

    out: dict[str, bytes] = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for split, s in summaries.items():
        h = s["seq_length_histogram"]
        x = np.arange(max_seq_length + 1)
        y = np.array([h.get(str(i), 0) for i in x])
        axes[0].plot(x, y / max(1, y.sum()), label=split)
        m = s["masked_count_histogram"]
        xm = np.arange(max_predictions_per_seq + 1)
        ym = np.array([m.get(str(i), 0) for i in xm])
        axes[1].plot(xm, ym / max(1, ym.sum()), marker="o", label=split)
    axes[0].set(title="sequence length (share of instances)", xlabel="tokens", yscale="log")
    axes[1].set(title="masked positions per instance", xlabel="targets")
    axes[0].legend()
    axes[1].legend()
    out["pretraining_lengths.png"] = png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(summaries)
    nsp = [summaries[k]["nsp"]["random_share"] or 0.0 for k in names]
    unk = [summaries[k]["unk_share"] or 0.0 for k in names]
    axes[0].bar(names, nsp, color="tab:orange")
    axes[0].axhline(0.5, color="gray", ls="--")
    axes[0].set(title="NSP: share of random B", ylim=(0, 1))
    decisions = ["mask_share", "random_share", "unchanged_share"]
    for j, split in enumerate(names):
        vals = [summaries[split]["mask_decisions"][d] or 0.0 for d in decisions]
        axes[1].bar(np.arange(3) + 0.4 * j, vals, width=0.4, label=split)
    axes[1].set_xticks(np.arange(3) + 0.2, ["[MASK]", "random", "unchanged"])
    axes[1].set(title=f"target replacement; [UNK] share {', '.join(f'{u:.4f}' for u in unk)}")
    axes[1].legend()
    out["pretraining_balance.png"] = png(fig)

    train = summaries.get("train") or next(iter(summaries.values()))
    top = train["top_tokens"][:30]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(range(len(top)), [c for _, c in top])
    # Devanagari needs a font most systems lack; the ranks are labelled by id-free index.
    ax.set_xticks(range(len(top)), [str(i + 1) for i in range(len(top))])
    ax.set(title="most frequent tokens (train; names in pretraining.json)", xlabel="rank", ylabel="count")
    out["pretraining_top_tokens.png"] = png(fig)
    return out
