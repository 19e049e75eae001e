"""trainer.task end to end on the CPU: training, refusal of bad inputs, NaN stop, kill and resume."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.fixtures import write_pretraining_data
from trainer import task
from trainer.export import load_export

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model_size", "tiny", "--max_position_embeddings", "64"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return write_pretraining_data(str(tmp_path_factory.mktemp("data") / "seq32"))


def _progress(caplog) -> list[dict[str, float]]:
    lines = []
    for record in caplog.records:
        msg = record.getMessage()
        if msg.startswith("step "):
            fields = dict(part.rsplit(" ", 1) for part in msg.split(" | "))
            lines.append({k: float(v) for k, v in fields.items()})
    return lines


def test_tiny_model_trains_and_exports(data_dir, tmp_path, caplog):
    model_dir = str(tmp_path / "model")
    argv = [
        "--data_dir", data_dir, "--model_dir", model_dir, *TINY,
        "--train_steps", "60", "--batch_size", "32", "--learning_rate", "5e-3", "--warmup_steps", "5",
        "--log_every", "20", "--checkpoint_every", "20", "--keep_checkpoints", "2",
        "--eval_every", "30", "--eval_steps", "1", "--hidden_dropout", "0", "--attention_dropout", "0",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="trainer"):
        assert task.main(argv) == 0

    progress = _progress(caplog)
    assert [p["step"] for p in progress] == [20, 40, 60]
    # The fixture's tokens follow a pattern: a working model learns it within 60 steps.
    assert progress[-1]["mlm_loss"] < progress[0]["mlm_loss"] - 0.5
    assert progress[-1]["mlm_accuracy"] > progress[0]["mlm_accuracy"] + 0.1
    for p in progress:
        assert {"loss", "nsp_loss", "nsp_accuracy", "lr", "examples/s"} <= set(p)
        assert p["loss"] == pytest.approx(p["mlm_loss"] + p["nsp_loss"], abs=0.05)
    assert progress[0]["lr"] == pytest.approx(5e-3 * (60 - 19) / 55, rel=1e-3)
    evals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval at step")]
    assert [m.split(" |")[0] for m in evals] == ["eval at step 30", "eval at step 60"]

    # The last two checkpoints are kept; the export is complete and records the run.
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == [
        "ckpt-000000040.json",
        "ckpt-000000040.safetensors",
        "ckpt-000000060.json",
        "ckpt-000000060.safetensors",
    ]
    config, weights, state = load_export(os.path.join(model_dir, "export"))
    assert (config.vocab_size, config.num_hidden_layers, config.use_nsp) == (60, 2, True)
    assert state["step"] == 60 and state["examples_seen"] == 60 * 32
    assert state["data_metadata"]["max_seq_length"] == 32
    assert set(state["eval_metrics"]) == {"loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"}
    assert len(weights) == 46
    tags = {}
    for split in ("train", "eval"):
        import tensorflow as tf

        (events,) = Path(model_dir, "tensorboard", split).glob("events.out.tfevents.*")
        tags[split] = {
            (v.tag, e.step) for e in tf.compat.v1.train.summary_iterator(str(events)) for v in e.summary.value
        }
    assert {("loss", 20), ("mlm_accuracy", 40), ("learning_rate", 60), ("examples_per_second", 60)} <= tags[
        "train"
    ]
    assert {("loss", 30), ("nsp_accuracy", 60)} <= tags["eval"]


def test_evaluation_covers_the_whole_split_in_padded_batches(data_dir, tmp_path, caplog):
    # 64 validation examples in batches of 24: 24 + 24 + 16 (and 8 padding rows of weight 0).
    argv = [
        "--data_dir", data_dir, "--model_dir", str(tmp_path / "model"), *TINY,
        "--train_steps", "2", "--batch_size", "24", "--warmup_steps", "0", "--log_every", "2",
        "--checkpoint_every", "2", "--eval_steps", "0", "--no-jit_compile",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="trainer"):
        assert task.main(argv) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "evaluation: all 64 examples in 3 batch(es) of 24 per host" in messages
    _, _, state = load_export(os.path.join(str(tmp_path / "model"), "export"))
    metrics = state["eval_metrics"]
    assert metrics["loss"] == pytest.approx(metrics["mlm_loss"] + metrics["nsp_loss"], rel=1e-6)


def test_gradient_accumulation_flag_gives_the_weights_of_whole_batches(data_dir, tmp_path, caplog):
    # The same data order, no dropout: 4 micro-batches of 4 per step end where batches of 16 end.
    base = [
        "--data_dir", data_dir, *TINY, "--train_steps", "4", "--batch_size", "16", "--warmup_steps", "1",
        "--learning_rate", "1e-3", "--log_every", "2", "--checkpoint_every", "4", "--eval_steps", "1",
        "--hidden_dropout", "0", "--attention_dropout", "0",
    ]  # fmt: skip
    whole, micro = str(tmp_path / "whole"), str(tmp_path / "micro")
    assert task.main([*base, "--model_dir", whole]) == 0
    with caplog.at_level(logging.INFO, logger="trainer"):
        assert task.main([*base, "--model_dir", micro, "--gradient_accumulation_steps", "4"]) == 0
    assert "training steps 1 to 4, global batch 16 in 4 micro-batches of 4" in caplog.text
    _, expected, expected_state = load_export(os.path.join(whole, "export"))
    _, got, state = load_export(os.path.join(micro, "export"))
    assert state["step"] == expected_state["step"] == 4
    assert state["examples_seen"] == expected_state["examples_seen"] == 64
    initial_dir = str(tmp_path / "initial")
    assert task.main([*base, "--model_dir", initial_dir, "--train_steps", "0"]) == 0  # same seed, no step
    _, initial, _ = load_export(os.path.join(initial_dir, "export"))
    assert max(float(np.max(np.abs(expected[k] - w))) for k, w in initial.items()) > 1e-3
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=2e-6, rtol=0, err_msg=name)

    # A batch that does not split into the micro-batches is refused before any work.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainer"):
        code = task.main([*base, "--model_dir", str(tmp_path / "bad"), "--gradient_accumulation_steps", "3"])
    assert code == 1
    assert "batch_size 16 is not divisible by gradient_accumulation_steps 3" in caplog.text
    assert not os.path.exists(tmp_path / "bad" / "checkpoints")


def test_datasets_run_without_the_autotune_thread(data_dir, tmp_path):
    # The datasets fit and evaluate get: without tf.data's autotuning thread, whose lost wake-up
    # made deleting their iterators (as fit and evaluate return) wait up to 60 s.
    args = task.parse_args(["--data_dir", data_dir, "--model_dir", str(tmp_path), *TINY])
    spec = task.data_spec_from_args(args)
    runtime = types.SimpleNamespace(backend="tensorflow", num_hosts=1, host_index=0)
    model = types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=60))
    training = task._Training(args, task.train_config_from_args(args), spec, runtime, model, None)
    synthetic_args = task.parse_args(["--synthetic_data", "--vocab_size", "60", "--model_dir", str(tmp_path)])
    synthetic = task._Training(
        synthetic_args,
        task.train_config_from_args(synthetic_args),
        task.data_spec_from_args(synthetic_args),
        runtime,
        model,
        None,
    )
    for run in (training, synthetic):
        eval_ds, steps = run.eval_dataset()
        assert steps > 0
        for ds in (run.train_dataset(0), run.train_dataset(10), eval_ds):
            assert ds.options().autotune.enabled is False
            assert next(iter(ds))[0]["input_ids"].shape[0] == args.batch_size


@pytest.mark.parametrize(
    ("extra", "metadata", "message"),
    [
        (["--vocab_size", "100"], None, "--vocab_size=100 disagrees with vocab_size=60 in"),
        (["--max_seq_length", "128"], None, "--max_seq_length=128 disagrees with max_seq_length=32 in"),
        (
            ["--max_position_embeddings", "16"],
            None,
            "the data's max_seq_length=32 exceeds the model's max_position_embeddings=16",
        ),
        (
            [],
            {"max_predictions_per_seq": 7},
            "masked_lm_positions has length 5 but max_predictions_per_seq=7",
        ),
        ([], {"max_seq_length": 40}, "input_ids has length 32 but max_seq_length=40"),
        ([], {"format_version": 9}, "format_version 9 is not one this trainer reads"),
        (["--attention_impl", "cudnn"], None, "--attention_impl cudnn needs KERAS_BACKEND=jax, not tensorflow"),
        (["--dropout_rng", "rbg"], None, "--dropout_rng rbg needs KERAS_BACKEND=jax, not tensorflow"),
        (["--dropout_rng", "hash"], None, "--dropout_rng hash needs KERAS_BACKEND=jax, not tensorflow"),
    ],
)
def test_mismatched_data_is_refused_before_training(tmp_path, caplog, extra, metadata, message):
    data = write_pretraining_data(
        str(tmp_path / "data"), num_train=8, num_eval=4, metadata_overrides=metadata
    )
    model_dir = tmp_path / "model"
    argv = [
        "--data_dir",
        data,
        "--model_dir",
        str(model_dir),
        "--model_size",
        "tiny",
        "--train_steps",
        "5",
        *extra,
    ]
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main(argv) == 1
    assert message in caplog.text
    assert not (model_dir / "checkpoints").exists()


def test_flags_replace_metadata(data_dir, tmp_path, caplog):
    # Files without metadata.json (google-research/bert's script): the flags give the facts.
    pattern = os.path.join(data_dir, "train-*.tfrecord")
    common = ["--model_dir", str(tmp_path / "m"), *TINY, "--batch_size", "8", "--log_every", "2"]
    assert task.main(["--train_files", pattern, "--max_seq_length", "32", *common, "--train_steps", "2"]) == 1
    argv = [
        "--train_files", pattern, "--eval_files", os.path.join(data_dir, "validation-*"),
        "--max_seq_length", "32", "--max_predictions_per_seq", "5", "--vocab_size", "60", "--mlm_only",
        *common, "--train_steps", "4", "--checkpoint_every", "4", "--steps_per_execution", "2", "--no-jit_compile",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="trainer"):
        assert task.main(argv) == 0
    assert "without a metadata.json the data needs the flag(s) --max_predictions_per_seq" in caplog.text
    # Two steps per execution: the host sees steps 2 and 4.
    assert [p["step"] for p in _progress(caplog)] == [2, 4]
    config, _, state = load_export(str(tmp_path / "m" / "export"))
    assert config.use_nsp is False and state["data_metadata"] is None and state["step"] == 4
    assert set(state["eval_metrics"]) == {"loss", "mlm_loss", "mlm_accuracy"}


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, caplog):
    model_dir = tmp_path / "model"
    # An absurd learning rate: finite weights after step 1, an infinite loss at step 2.
    argv = [
        "--data_dir", data_dir, "--model_dir", str(model_dir), *TINY, "--train_steps", "6",
        "--batch_size", "8", "--learning_rate", "1e30", "--warmup_steps", "0", "--clip_norm", "0",
        "--log_every", "1", "--checkpoint_every", "1", "--no-jit_compile",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="trainer"):
        assert task.main(argv) == 2
    assert re.search(
        r"stopped: (loss is (nan|inf) at step \d|weights are not finite at step \d)", caplog.text
    )
    assert "keeps the last good checkpoint" in caplog.text
    saved = sorted(os.listdir(model_dir / "checkpoints"))
    assert saved and len(saved) < 12  # stopped before the end
    assert not (model_dir / "export").exists()
    # Every checkpoint kept holds finite weights.
    from safetensors.numpy import load_file

    for name in saved:
        if name.endswith(".safetensors"):
            tensors = load_file(str(model_dir / "checkpoints" / name))
            assert all(np.all(np.isfinite(t)) for k, t in tensors.items() if k.startswith("model/"))


def _task_cmd(data_dir: str, model_dir: str) -> list[str]:
    return [
        sys.executable, "-m", "trainer.task", "--data_dir", data_dir, "--model_dir", model_dir, *TINY,
        "--train_steps", "60", "--batch_size", "16", "--learning_rate", "1e-3", "--warmup_steps", "5",
        "--log_every", "10", "--checkpoint_every", "10", "--keep_checkpoints", "10", "--eval_steps", "1",
        "--data_resume", "skip", "--no-jit_compile",
    ]  # fmt: skip


def test_killed_job_resumes_from_its_last_checkpoint_to_the_same_weights(data_dir, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    killed_dir = str(tmp_path / "killed")
    proc = subprocess.Popen(
        _task_cmd(data_dir, killed_dir),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = Path(killed_dir, "checkpoints", "ckpt-000000010.json")
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the job ended without writing its first checkpoint"
    assert not Path(killed_dir, "export").exists(), "the job finished before it was killed"
    steps = sorted(int(p.stem.split("-")[1]) for p in Path(killed_dir, "checkpoints").glob("ckpt-*.json"))

    resumed = subprocess.run(
        _task_cmd(data_dir, killed_dir), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from checkpoint at step {steps[-1]} " in resumed.stdout
    assert f"training steps {steps[-1] + 1} to 60" in resumed.stdout

    whole_dir = str(tmp_path / "whole")
    whole = subprocess.run(_task_cmd(data_dir, whole_dir), cwd=REPO, env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]

    # Same step, optimizer state, dropout seeds and data position: bit-identical weights.
    _, a, state_a = load_export(os.path.join(killed_dir, "export"))
    _, b, state_b = load_export(os.path.join(whole_dir, "export"))
    assert state_a["step"] == state_b["step"] == 60
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    meta = json.loads(Path(killed_dir, "checkpoints", "ckpt-000000060.json").read_text())
    assert meta["step"] == 60 and meta["state"]["examples_seen"] == 960


@pytest.mark.slow  # ~50 s: JAX start-up and compilation on top of the TF process
def test_jax_backend_trains_on_two_devices_and_exports(data_dir, tmp_path):
    model_dir = str(tmp_path / "jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable, "-m", "trainer.task", "--data_dir", data_dir, "--model_dir", model_dir, *TINY,
        "--train_steps", "4", "--batch_size", "8", "--log_every", "2", "--checkpoint_every", "2",
        "--eval_steps", "1", "--strategy", "cpu", "--cpu_replicas", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "backend jax on JAX cpu x2 over 1 host(s), 2 replica(s)" in proc.stdout
    assert re.search(r"step 4 \| loss \d", proc.stdout)
    _, weights, state = load_export(os.path.join(model_dir, "export"))
    assert state["step"] == 4 and state["keras_backend"] == "jax" and len(weights) == 46


def test_a_model_dir_of_another_model_is_refused(data_dir, tmp_path, caplog):
    model_dir = str(tmp_path / "model")
    base = ["--data_dir", data_dir, "--model_dir", model_dir, *TINY, "--train_steps", "0"]
    assert task.main(base) == 0  # import-and-export only: no training
    assert os.path.exists(os.path.join(model_dir, "export", "model.safetensors"))
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main([*base, "--num_layers", "3"]) == 1
    assert "holds a run of another model; (saved, now) differ in {'num_hidden_layers': (2, 3)}" in caplog.text


def test_sigterm_saves_a_checkpoint_and_stops(data_dir, tmp_path):
    # A preempted VM gets SIGTERM: the job checkpoints the step it reached and exits 143.
    model_dir = str(tmp_path / "model")
    cmd = _task_cmd(data_dir, model_dir)
    cmd[cmd.index("--train_steps") + 1] = "100000"
    cmd[cmd.index("--checkpoint_every") + 1] = "5000"
    cmd[cmd.index("--log_every") + 1] = "5"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if " INFO step 5 |" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    log = "".join(lines) + out
    assert proc.returncode == 143, log[-3000:]
    match = re.search(r"stopped by SIGTERM at step (\d+) after saving its checkpoint", log)
    assert match, log[-3000:]
    step = int(match.group(1))
    assert 5 <= step < 5000
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == [
        f"ckpt-{step:09d}.json",
        f"ckpt-{step:09d}.safetensors",
    ]
    assert not os.path.exists(os.path.join(model_dir, "export"))
