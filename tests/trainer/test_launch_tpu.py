"""The TPU launcher's gcloud commands (``--dry_run``) and its clean-up on failure."""

from __future__ import annotations

import os
import shlex
import stat
import textwrap

import pytest

from trainer import launch_tpu

TASK = [
    "--data_dir",
    "gs://bkt/out/pretraining/seq128",
    "--model_dir",
    "gs://bkt/models/base",
    "--model_size",
    "base",
    "--strategy",
    "tpu",
    "--train_steps",
    "1000",
]
TASK_REMOTE = (
    "KERAS_BACKEND=tensorflow PYTHONUNBUFFERED=1 python3 -m trainer.task --data_dir gs://bkt/out/pretraining/seq128 "
    "--model_dir gs://bkt/models/base --model_size base --strategy tpu --train_steps 1000"
)
TASK_REMOTE_JAX = TASK_REMOTE.replace("KERAS_BACKEND=tensorflow", "KERAS_BACKEND=jax")
JAX_RUNTIME = (
    'python3 -m pip install -q "jax[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html'
)
TF_RUNTIME = "python3 -m pip install -q tensorflow-tpu==2.21.0 -f https://storage.googleapis.com/libtpu-tf-releases/index.html"

CASES = {
    "single_host": (
        [
            "--name",
            "bert-hi",
            "--zone",
            "us-central1-f",
            "--accelerator_type",
            "v3-8",
            "--package",
            "dist/hindi_bert-0.1.0.tar.gz",
        ],
        [
            "# create",
            "gcloud compute tpus tpu-vm create bert-hi --zone=us-central1-f --accelerator-type=v3-8 "
            "--version=tpu-ubuntu2204-base",
            "# install on every worker",
            "gcloud compute tpus tpu-vm scp dist/hindi_bert-0.1.0.tar.gz bert-hi:/tmp/hindi_bert-0.1.0.tar.gz "
            "--zone=us-central1-f --worker=all",
            "gcloud compute tpus tpu-vm ssh bert-hi --zone=us-central1-f --worker=all --command 'set -e; "
            "python3 -m pip install -q --upgrade pip; "
            'python3 -m pip install -q "hindi_bert[trainer] @ file:///tmp/hindi_bert-0.1.0.tar.gz"; '
            f"{TF_RUNTIME}'",
            "# train on every worker",
            f"gcloud compute tpus tpu-vm ssh bert-hi --zone=us-central1-f --worker=all --command '{TASK_REMOTE}'",
            "# delete (also after a failure or Ctrl-C)",
            "gcloud compute tpus tpu-vm delete bert-hi --zone=us-central1-f --quiet",
        ],
    ),
    "pod_from_gcs_with_project": (
        [
            "--name",
            "bert-pod",
            "--zone",
            "us-central2-b",
            "--accelerator_type",
            "v4-32",
            "--project",
            "proj-1",
            "--backend",
            "jax",
            "--package",
            "gs://bkt/dist/hindi_bert-0.1.0-py3-none-any.whl",
        ],
        [
            "# create",
            "gcloud compute tpus tpu-vm create bert-pod --zone=us-central2-b --project=proj-1 "
            "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base",
            "# install on every worker",
            "gcloud compute tpus tpu-vm ssh bert-pod --zone=us-central2-b --project=proj-1 --worker=all "
            "--command 'set -e; gcloud storage cp gs://bkt/dist/hindi_bert-0.1.0-py3-none-any.whl "
            "/tmp/hindi_bert-0.1.0-py3-none-any.whl; python3 -m pip install -q --upgrade pip; "
            'python3 -m pip install -q "hindi_bert[trainer] @ file:///tmp/hindi_bert-0.1.0-py3-none-any.whl"; '
            f"{JAX_RUNTIME}'",
            "# train on every worker",
            "gcloud compute tpus tpu-vm ssh bert-pod --zone=us-central2-b --project=proj-1 --worker=all "
            f"--command '{TASK_REMOTE_JAX}'",
            "# delete (also after a failure or Ctrl-C)",
            "gcloud compute tpus tpu-vm delete bert-pod --zone=us-central2-b --project=proj-1 --quiet",
        ],
    ),
    "queued_resource_jax": (
        [
            "--name",
            "bert-q",
            "--zone",
            "us-east5-a",
            "--accelerator_type",
            "v5litepod-8",
            "--version",
            "v2-alpha-tpuv5-lite",
            "--queued_resource",
            "--backend",
            "jax",
            "--package",
            "dist/hindi_bert-0.1.0.tar.gz",
        ],
        [
            "# create",
            "gcloud compute tpus queued-resources create bert-q --node-id=bert-q --zone=us-east5-a "
            "--accelerator-type=v5litepod-8 --runtime-version=v2-alpha-tpuv5-lite",
            "# repeat every 30 s until it prints ACTIVE",
            "gcloud compute tpus queued-resources describe bert-q --zone=us-east5-a '--format=value(state.state)'",
            "# install on every worker",
            "gcloud compute tpus tpu-vm scp dist/hindi_bert-0.1.0.tar.gz bert-q:/tmp/hindi_bert-0.1.0.tar.gz "
            "--zone=us-east5-a --worker=all",
            "gcloud compute tpus tpu-vm ssh bert-q --zone=us-east5-a --worker=all --command 'set -e; "
            "python3 -m pip install -q --upgrade pip; "
            'python3 -m pip install -q "hindi_bert[trainer] @ file:///tmp/hindi_bert-0.1.0.tar.gz"; '
            'python3 -m pip install -q "jax[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html\'',
            "# train on every worker",
            "gcloud compute tpus tpu-vm ssh bert-q --zone=us-east5-a --worker=all --command '"
            + TASK_REMOTE.replace("KERAS_BACKEND=tensorflow", "KERAS_BACKEND=jax")
            + "'",
            "# delete (also after a failure or Ctrl-C)",
            "gcloud compute tpus queued-resources delete bert-q --zone=us-east5-a --force --quiet",
        ],
    ),
    "spot_queued_keep_vm": (
        [
            "--name",
            "bert-s",
            "--zone",
            "europe-west4-a",
            "--accelerator_type",
            "v3-8",
            "--spot",
            "--queued_resource",
            "--keep_vm",
            "--service_account",
            "tpu@proj-1.iam.gserviceaccount.com",
            "--runtime_pip",
            "tensorflow-tpu==2.20.0",
            "--env",
            "TF_CPP_MIN_LOG_LEVEL=1",
            "--package",
            "dist/hindi_bert-0.1.0.tar.gz",
        ],
        [
            "# create",
            "gcloud compute tpus queued-resources create bert-s --node-id=bert-s --zone=europe-west4-a "
            "--accelerator-type=v3-8 --runtime-version=tpu-ubuntu2204-base "
            "--service-account=tpu@proj-1.iam.gserviceaccount.com --spot",
            "# repeat every 30 s until it prints ACTIVE",
            "gcloud compute tpus queued-resources describe bert-s --zone=europe-west4-a "
            "'--format=value(state.state)'",
            "# install on every worker",
            "gcloud compute tpus tpu-vm scp dist/hindi_bert-0.1.0.tar.gz bert-s:/tmp/hindi_bert-0.1.0.tar.gz "
            "--zone=europe-west4-a --worker=all",
            "gcloud compute tpus tpu-vm ssh bert-s --zone=europe-west4-a --worker=all --command 'set -e; "
            "python3 -m pip install -q --upgrade pip; "
            'python3 -m pip install -q "hindi_bert[trainer] @ file:///tmp/hindi_bert-0.1.0.tar.gz"; '
            "python3 -m pip install -q tensorflow-tpu==2.20.0 -f https://storage.googleapis.com/libtpu-tf-releases/index.html'",
            "# train on every worker",
            "gcloud compute tpus tpu-vm ssh bert-s --zone=europe-west4-a --worker=all --command '"
            + TASK_REMOTE.replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=1")
            + "'",
            "# --keep_vm: not deleted; delete it with",
            "# gcloud compute tpus queued-resources delete bert-s --zone=europe-west4-a --force --quiet",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dry_run_prints_exact_commands(case, capsys):
    flags, expected = CASES[case]
    assert launch_tpu.main([*flags, "--dry_run", "--", *TASK]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_every_worker_command_targets_all_workers():
    cfg, _ = launch_tpu.parse_args(CASES["pod_from_gcs_with_project"][0] + ["--", *TASK])
    for cmd in (launch_tpu.install_command(cfg), launch_tpu.run_command(cfg)):
        assert "--worker=all" in cmd


def test_task_flags_survive_both_shells():
    """The printed line, split by the local shell, then by the worker's, gives back the flags."""
    odd = ["--model_dir", "gs://bkt/a b", "--note", "it's $HOME", "--x", 'say "hi"']
    cfg, _ = launch_tpu.parse_args(CASES["single_host"][0] + ["--", *odd])
    local = shlex.split(shlex.join(launch_tpu.run_command(cfg)))
    remote = shlex.split(local[local.index("--command") + 1])
    assert remote[remote.index("trainer.task") + 1 :] == odd


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--name", "Bert_1"], "--name 'Bert_1'"),
        (["--accelerator_type", "a100"], "--accelerator_type 'a100'"),
        (["--package", "dist/project.zip"], "--package 'dist/project.zip'"),
        (["--env", "1X=2"], "--env '1X=2'"),
        (["--accelerator_type", "v4-32"], "v4-32 has several hosts"),
    ],
)
def test_bad_flags_are_named(flags, message, capsys):
    base = dict(zip(CASES["single_host"][0][::2], CASES["single_host"][0][1::2], strict=True))
    base.update(dict(zip(flags[::2], flags[1::2], strict=True)))
    argv = [x for kv in base.items() for x in kv] + ["--dry_run"]
    with pytest.raises(SystemExit):
        launch_tpu.main(argv)
    assert message in capsys.readouterr().err


def _fake_gcloud(tmp_path, fail_on: str) -> str:
    """A `gcloud` on PATH that records its arguments and fails when they contain ``fail_on``."""
    log = tmp_path / "calls.log"
    script = tmp_path / "bin" / "gcloud"
    script.parent.mkdir()
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        echo "$*" >> {log}
        case "$*" in *{fail_on}*) exit 3;; esac
        exit 0
        """)
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(log)


@pytest.mark.parametrize(
    ("fail_on", "expected_rc", "deleted"),
    [("trainer.task", 3, True), ("tpu-vm create", None, False), ("NOTHING", 0, True)],
)
def test_launch_deletes_the_vm_it_created(tmp_path, monkeypatch, fail_on, expected_rc, deleted):
    log = _fake_gcloud(tmp_path, fail_on)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    package = tmp_path / "hindi_bert-0.1.0.tar.gz"
    package.write_bytes(b"")
    cfg, _ = launch_tpu.parse_args(
        [
            "--name",
            "bert-hi",
            "--zone",
            "z",
            "--accelerator_type",
            "v3-8",
            "--package",
            str(package),
            "--",
            *TASK,
        ]
    )
    if expected_rc is None:
        with pytest.raises(launch_tpu.subprocess.CalledProcessError):
            launch_tpu.launch(cfg)
    else:
        assert launch_tpu.launch(cfg) == expected_rc
    calls = open(log).read().splitlines()
    assert calls[0].startswith("compute tpus tpu-vm create bert-hi")
    assert (calls[-1] == "compute tpus tpu-vm delete bert-hi --zone=z --quiet") == deleted
    if expected_rc is not None:
        assert [c.split()[3] for c in calls] == ["create", "scp", "ssh", "ssh", "delete"]


def test_missing_local_package_is_refused_before_creating(tmp_path, monkeypatch):
    log = _fake_gcloud(tmp_path, "NOTHING")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cfg, _ = launch_tpu.parse_args(CASES["single_host"][0] + ["--", *TASK])
    with pytest.raises(FileNotFoundError, match="--package dist/hindi_bert-0.1.0.tar.gz: no such file"):
        launch_tpu.launch(cfg)
    assert not os.path.exists(log)
