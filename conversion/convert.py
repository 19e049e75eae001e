"""Converts the trainer's export into a Hugging Face BERT folder, optionally verifying it.

Local::

    python -m conversion.convert --model_dir runs/tiny --vocab_dir data/vocab \\
        --output_dir hf/hindi-bert-tiny --verify --data_dir data/pretraining/seq128

Google Cloud Storage (also installed as ``bert-convert``)::

    bert-convert --model_dir gs://BUCKET/runs/base --vocab_dir gs://BUCKET/data/vocab \\
        --output_dir gs://BUCKET/hf/hindi-bert-base --verify

Reads ``MODEL_DIR/export/{bert_config.json, model.safetensors, training_state.json}``
(docs/export_format.md) and the vocabulary directory; writes ``config.json``
(``BertForPreTraining``), ``model.safetensors``, the tokenizer files and a model card. Every
input is checked (files present, vocabulary size equal to the model's, the activation known,
every weight's name and shape) before anything is written; the folder is built in a staging
directory, verified there with ``--verify``, and only then moved to ``--output_dir``. An
existing non-empty output is replaced only with ``--overwrite``.

Exit status: 0 on success, 1 on bad input or a failed verification (the message says what).
"""

from __future__ import annotations

import argparse
import sys

from conversion import files, hf_writer, model_card, verify, vocab_files
from trainer import export, fileio
from trainer.config import BertConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bert-convert", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model_dir", required=True, help="trainer model dir (holding export/) or the export dir"
    )
    parser.add_argument("--vocab_dir", required=True, help="directory with vocab.txt and tokenizer.json")
    parser.add_argument("--output_dir", required=True, help="the Hugging Face folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    parser.add_argument("--verify", action="store_true", help="compare the trained and the converted model")
    parser.add_argument(
        "--data_dir",
        help="TFRecord set (directory of its metadata.json) whose validation examples --verify uses; "
        "without it --verify generates examples from the vocabulary",
    )
    parser.add_argument("--verify_examples", type=int, default=32, help="examples --verify compares")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed logit/loss difference")
    parser.add_argument("--language", default="hi", help="language code for the model card ('' to omit)")
    args = parser.parse_args(argv)
    if args.verify_examples < 1:
        parser.error(f"--verify_examples must be >= 1, got {args.verify_examples}")
    if not args.tolerance > 0:
        parser.error(f"--tolerance must be > 0, got {args.tolerance}")
    return args


def find_export_dir(model_dir: str) -> str:
    """``MODEL_DIR/export`` when it exists, else ``model_dir`` itself if it holds an export."""
    nested = fileio.join(model_dir, "export")
    if fileio.exists(fileio.join(nested, export.CONFIG_NAME)) or not fileio.exists(
        fileio.join(model_dir, export.CONFIG_NAME)
    ):
        return nested
    return model_dir


def build_files(
    *, export_dir: str, vocab_dir: str, output_dir: str, language: str | None
) -> tuple[dict[str, bytes], BertConfig, vocab_files.Vocabulary, list[str]]:
    """Reads and checks every input.

    Returns:
        The output files by name, the model config, the vocabulary, and notes on what the
        converter had to add to ``tokenizer.json`` (see ``vocab_files.complete_tokenizer_json``).

    Raises:
        FileNotFoundError: naming the missing export or vocabulary files.
        ValueError: for a vocabulary that disagrees with the model, an unknown activation or
            weights that do not fit the config (the message lists every difference).
    """
    if not fileio.exists(export_dir):
        raise FileNotFoundError(f"{export_dir} not found: --model_dir holds no trainer export")
    missing = [
        fileio.join(export_dir, name)
        for name in (export.CONFIG_NAME, export.WEIGHTS_NAME, export.STATE_NAME)
        if not fileio.exists(fileio.join(export_dir, name))
    ]
    vocab_missing = [
        fileio.join(vocab_dir, name)
        for name in vocab_files.REQUIRED_FILES
        if not fileio.exists(fileio.join(vocab_dir, name))
    ]
    if missing or vocab_missing:
        raise FileNotFoundError(f"missing input file(s): {missing + vocab_missing}")
    config, weights, state = export.load_export(export_dir)
    vocab = vocab_files.read_vocabulary(vocab_dir)
    if vocab.size != config.vocab_size:
        raise ValueError(
            f"the vocabulary has {vocab.size} tokens ({fileio.join(vocab_dir, vocab_files.VOCAB_TXT)}) but the "
            f"model's vocab_size is {config.vocab_size} ({fileio.join(export_dir, export.CONFIG_NAME)})"
        )
    try:
        out = hf_writer.model_files(weights, config, pad_token_id=vocab.token_id("pad_token"))
    except ValueError as e:
        raise ValueError(f"{fileio.join(export_dir, export.WEIGHTS_NAME)}: {e}") from e
    tokenizer_out, notes = vocab_files.tokenizer_files(vocab, model_max_length=config.max_position_embeddings)
    out.update(tokenizer_out)
    card = model_card.render(
        config=config.to_dict(),
        training_state=state,
        vocab_size=vocab.size,
        model_path=output_dir,
        language=language or None,
        **vocab_files.case_and_accents(vocab),
    )
    out["README.md"] = card.encode("utf-8")
    return out, config, vocab, notes


def convert(args: argparse.Namespace, *, log=print) -> None:
    """Runs the conversion described by the parsed flags (see the module docstring)."""
    files.check_output_dir(args.output_dir, overwrite=args.overwrite)
    export_dir = find_export_dir(args.model_dir)
    outputs, config, vocab, notes = build_files(
        export_dir=export_dir, vocab_dir=args.vocab_dir, output_dir=args.output_dir, language=args.language
    )
    for note in notes:
        log(note)
    examples = source = None
    if args.verify:
        # Read or make the examples first: a bad --data_dir fails before anything is written.
        if args.data_dir:
            examples, source = verify.tfrecord_examples(
                args.data_dir, num_examples=args.verify_examples, vocab_size=config.vocab_size
            )
        else:
            seq_len = min(128, config.max_position_embeddings)
            examples = verify.generated_examples(
                vocab.tokens,
                num_examples=args.verify_examples,
                seq_len=seq_len,
                num_predictions=max(1, min(20, seq_len // 6)),
            )
            source = "the vocabulary (generated)"
    staging = files.make_staging_dir(args.output_dir)
    try:
        files.write_files(staging, outputs)
        if args.verify:
            result = verify.verify(
                export_dir=export_dir,
                hf_dir=staging,
                examples=examples,
                source=source,
                tolerance=args.tolerance,
            )
            for line in result.lines():
                log(line)
        files.publish(staging, args.output_dir, overwrite=args.overwrite)
    except BaseException:
        files.discard(staging)
        raise
    log(f"wrote {args.output_dir}: {', '.join(sorted(outputs))}")


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(argv)
    try:
        convert(args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"bert-convert: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
