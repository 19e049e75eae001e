"""The whole job on gs:// (the GCS emulator): pipeline, then trainer, then converter (marked ``gcs``).

Every path of the three command lines is a ``gs://`` URL; each part runs as its own process,
as on Google Cloud, with the sample corpus bundled in the repository as input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.gcs, pytest.mark.integration]


def _run(args: list[str], repo_root) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, *args], cwd=repo_root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _read(uri: str) -> bytes:
    from google.cloud import storage

    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return storage.Client().bucket(bucket).blob(name).download_as_bytes()


def _list(prefix: str) -> dict[str, int]:
    from google.cloud import storage

    bucket, _, name = prefix.removeprefix("gs://").partition("/")
    return {b.name[len(name):].lstrip("/"): b.size for b in storage.Client().list_blobs(bucket, prefix=name + "/")}


def test_pipeline_trainer_converter_on_gcs(tf_gcs, gcs_prefix, repo_root, tmp_path):
    from google.cloud import storage

    sample_dir = repo_root / "beam_pipelines" / "sample_data"
    manifest = json.loads((sample_dir / "manifest.json").read_text(encoding="utf-8"))
    bucket_name, _, prefix = gcs_prefix.removeprefix("gs://").partition("/")
    bucket = storage.Client().bucket(bucket_name)
    for name in manifest["files"]:
        bucket.blob(f"{prefix}/oscar/{name}").upload_from_filename(str(sample_dir / name))
    out, run, hf = f"{gcs_prefix}/out", f"{gcs_prefix}/runs/tiny", f"{gcs_prefix}/hf"

    _run(["-m", "beam_pipelines.build", "--input", f"{gcs_prefix}/oscar/hi_meta_part_*.jsonl.zst",
          "--output_dir", out, "--vocab_size", "2000", "--max_seq_length", "64", "--max_predictions_per_seq", "10",
          "--dupe_factor", "1", "--num_shards", "2"], repo_root)
    report = json.loads(_read(f"{out}/reports/corpus.json"))
    kinds = manifest["kinds"]
    assert report["records_read"] == manifest["records"]
    assert report["documents_dropped"]["duplicate"] == kinds["duplicate"]
    assert report["documents_dropped"]["language"] == kinds["non_hindi"] + kinds["low_prob"]
    assert report["documents_dropped"]["harmful_pp"] == kinds["harmful"]
    assert report["documents_dropped"]["low_devanagari"] == kinds["latin_heavy"]
    assert report["documents_dropped"]["quality_warning"] == kinds["tiny"] + kinds["noisy"]
    assert report["documents_kept"] == kinds["hindi"] + kinds["short_sentences"] + kinds["header_footer"]
    metadata = json.loads(_read(f"{out}/pretraining/seq64/metadata.json"))
    vocab = _read(f"{out}/vocab/vocab.txt").decode("utf-8").splitlines()
    assert metadata["vocab_size"] == len(vocab) == 2000
    assert metadata["input_counts"]["documents_kept"] == report["documents_kept"]
    written = _list(f"{out}/pretraining/seq64")
    # The stage's temporary files are gone (on GCS a "directory" is only a prefix).
    assert not [name for name in written if name.startswith("_spill/")]
    for split in ("train", "validation"):
        assert metadata["splits"][split]["num_examples"] > 0
        assert {f"{split}-0000{i}-of-00002.tfrecord" for i in range(2)} <= set(written)

    _run(["-m", "trainer.task", "--data_dir", f"{out}/pretraining/seq64", "--model_dir", run,
          "--model_size", "tiny", "--max_position_embeddings", "64", "--batch_size", "8", "--train_steps", "4",
          "--log_every", "2", "--checkpoint_every", "2", "--eval_steps", "1", "--no-jit_compile"], repo_root)
    run_files = _list(run)
    assert any(name.startswith("checkpoints/") for name in run_files)
    assert any(name.startswith("export/") for name in run_files)

    verified = _run(["-m", "conversion.convert", "--model_dir", run, "--vocab_dir", f"{out}/vocab",
                     "--output_dir", hf, "--verify", "--data_dir", f"{out}/pretraining/seq64"], repo_root)
    assert "verify:" in verified.stdout + verified.stderr
    local = tmp_path / "hf"
    local.mkdir()
    for name in _list(hf):
        if name and not name.endswith("/"):
            (local / name).write_bytes(_read(f"{hf}/{name}"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {p.name for p in local.iterdir()}
    assert (local / "vocab.txt").read_text(encoding="utf-8").splitlines() == vocab

    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(local), device="cpu")
    predictions = fill("भारत एक [MASK] देश है।", top_k=5)
    assert len(predictions) == 5
    assert all(p["token_str"] and p["token"] < len(vocab) for p in predictions)
