"""Runs ``trainer.task`` on a Cloud TPU VM: create, install, train on every worker, delete.

Local check of the plan (prints the exact ``gcloud`` commands, runs nothing)::

    python -m trainer.launch_tpu --name bert-hi --zone us-central1-f --accelerator_type v3-8 \\
        --package dist/hindi_bert-0.1.0.tar.gz --dry_run -- \\
        --data_dir gs://BUCKET/out/pretraining/seq128 --model_dir gs://BUCKET/models/base \\
        --model_size base --strategy tpu --train_steps 100000 --batch_size 1024

Cloud run: the same without ``--dry_run``. ``--queued_resource`` asks for the TPU through a queued
resource (waits until the capacity is granted), ``--spot`` for preemptible capacity, and a pod
slice (``v4-32``, several hosts) works the same way: every command that touches the VM carries
``--worker=all``, so each host installs the package and runs ``trainer.task``, which reads its own
shard of the data (pod slices need ``--backend jax``: JAX runs one process per host, TensorFlow's
TPUStrategy does not). The VM (or queued resource) is deleted at the end, also after a failure or
Ctrl-C, unless ``--keep_vm``. docs/tpu.md has the one-time setup (APIs, the TPU service account's
access to the bucket).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

# What each Keras backend needs on a TPU VM beyond the package's [trainer] extra.
TF_TPU_FIND_LINKS = "https://storage.googleapis.com/libtpu-tf-releases/index.html"
JAX_TPU_FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
RUNTIME_PIP = {
    "tensorflow": (("tensorflow-tpu==2.21.0",), TF_TPU_FIND_LINKS),
    "jax": (("jax[tpu]",), JAX_TPU_FIND_LINKS),
}
QUEUED_POLL_S = 30
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ACCELERATOR_RE = re.compile(r"^v\d+[a-z]*(litepod)?-\d+$")
_PACKAGE_RE = re.compile(r"^(?P<dist>[A-Za-z0-9_.]+?)-\d[^/]*\.(tar\.gz|whl)$")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """One launch of ``trainer.task`` on a TPU VM.

    Attributes:
        name: TPU VM name (also the queued resource's name).
        zone: Compute zone, e.g. ``us-central1-f``.
        accelerator_type: e.g. ``v3-8``, ``v4-32``, ``v5litepod-8``.
        version: TPU software (runtime) version, e.g. ``tpu-ubuntu2204-base``.
        package: the project's sdist or wheel: a local file (copied to each worker) or ``gs://``.
        task_args: flags passed to ``python -m trainer.task`` unchanged.
        project: Google Cloud project; gcloud's default when None.
        queued_resource: create the TPU through ``queued-resources`` and wait until it is ACTIVE.
        spot: preemptible (Spot) capacity.
        backend: ``KERAS_BACKEND`` on the workers: ``tensorflow`` or ``jax``.
        runtime_pip: requirements installed after the package, for the backend's TPU runtime.
        find_links: ``pip -f`` index for ``runtime_pip``.
        env: extra ``NAME=VALUE`` environment for ``trainer.task``.
        service_account: service account the TPU VM runs as (needs the bucket's access).
        keep_vm: do not delete the VM at the end.
        queued_timeout_s: how long to wait for a queued resource to become ACTIVE.
    """

    name: str
    zone: str
    accelerator_type: str
    version: str
    package: str
    task_args: tuple[str, ...] = ()
    project: str | None = None
    queued_resource: bool = False
    spot: bool = False
    backend: str = "tensorflow"
    runtime_pip: tuple[str, ...] | None = None
    find_links: str | None = None
    env: tuple[str, ...] = ()
    service_account: str | None = None
    keep_vm: bool = False
    queued_timeout_s: int = 6 * 3600

    def __post_init__(self):
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"--name {self.name!r}: use 1-63 lowercase letters, digits and hyphens, starting with a letter"
            )
        if not self.zone:
            raise ValueError("--zone is required (e.g. us-central1-f)")
        if not _ACCELERATOR_RE.match(self.accelerator_type):
            raise ValueError(
                f"--accelerator_type {self.accelerator_type!r}: expected a TPU type such as v3-8, v4-32, v5litepod-8"
            )
        if self.backend not in RUNTIME_PIP:
            raise ValueError(f"--backend {self.backend!r}: expected one of {sorted(RUNTIME_PIP)}")
        if self.backend == "tensorflow" and self.is_multi_host:
            raise ValueError(
                f"--accelerator_type {self.accelerator_type} has several hosts: this launcher runs trainer.task on "
                "every worker (JAX's way), while TensorFlow's TPUStrategy on a pod slice runs one client on worker 0 "
                "against a tpu-vm-tf-*-pod image; use --backend jax for pod slices"
            )
        if not _PACKAGE_RE.match(os.path.basename(self.package)):
            raise ValueError(
                f"--package {self.package!r}: expected an sdist or wheel of this project "
                "(NAME-VERSION.tar.gz or .whl; build one with `python setup.py sdist`)"
            )
        for item in self.env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", item):
                raise ValueError(f"--env {item!r}: expected NAME=VALUE")

    @property
    def is_multi_host(self) -> bool:
        """Slices of more than 8 cores (v2-v5p) or chips (v5e, v6e) span several TPU VM hosts."""
        return int(self.accelerator_type.rsplit("-", 1)[1]) > 8

    @property
    def is_local_package(self) -> bool:
        return not self.package.startswith("gs://")

    @property
    def remote_package(self) -> str:
        return f"/tmp/{os.path.basename(self.package)}"

    @property
    def pip_runtime(self) -> tuple[tuple[str, ...], str | None]:
        default_reqs, default_links = RUNTIME_PIP[self.backend]
        reqs = default_reqs if self.runtime_pip is None else self.runtime_pip
        return reqs, (self.find_links if self.find_links is not None else default_links)


def _common(cfg: LaunchConfig) -> list[str]:
    flags = [f"--zone={cfg.zone}"]
    if cfg.project:
        flags.append(f"--project={cfg.project}")
    return flags


def create_command(cfg: LaunchConfig) -> list[str]:
    """The ``gcloud`` command that creates the TPU VM (or asks for it through a queued resource)."""
    if cfg.queued_resource:
        cmd = ["gcloud", "compute", "tpus", "queued-resources", "create", cfg.name, f"--node-id={cfg.name}"]
        cmd += _common(cfg) + [
            f"--accelerator-type={cfg.accelerator_type}",
            f"--runtime-version={cfg.version}",
        ]
    else:
        cmd = ["gcloud", "compute", "tpus", "tpu-vm", "create", cfg.name]
        cmd += _common(cfg) + [f"--accelerator-type={cfg.accelerator_type}", f"--version={cfg.version}"]
    if cfg.service_account:
        cmd.append(f"--service-account={cfg.service_account}")
    if cfg.spot:
        cmd.append("--spot")
    return cmd


def queued_state_command(cfg: LaunchConfig) -> list[str]:
    """Prints the queued resource's state (WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, FAILED...)."""
    return [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "describe",
        cfg.name,
        *_common(cfg),
        "--format=value(state.state)",
    ]


def _ssh(cfg: LaunchConfig, remote: str) -> list[str]:
    return [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        cfg.name,
        *_common(cfg),
        "--worker=all",
        "--command",
        remote,
    ]


def _remote_join(args: Sequence[str]) -> str:
    """Quotes for the worker's shell, with double quotes where they suffice (readable when printed)."""
    out = []
    for arg in args:
        if shlex.quote(arg) == arg:
            out.append(arg)
        elif not any(c in arg for c in '$`\\"!'):
            out.append(f'"{arg}"')
        else:
            out.append(shlex.quote(arg))
    return " ".join(out)


def copy_package_command(cfg: LaunchConfig) -> list[str] | None:
    """Copies a local package to every worker (None for a ``gs://`` package, fetched by the workers)."""
    if not cfg.is_local_package:
        return None
    return [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        cfg.package,
        f"{cfg.name}:{cfg.remote_package}",
        *_common(cfg),
        "--worker=all",
    ]


def install_command(cfg: LaunchConfig) -> list[str]:
    """Installs the package with its ``[trainer]`` extra, then the backend's TPU runtime, on every worker."""
    dist = _PACKAGE_RE.match(os.path.basename(cfg.package)).group("dist")
    steps = ["set -e"]
    if not cfg.is_local_package:
        steps.append(_remote_join(["gcloud", "storage", "cp", cfg.package, cfg.remote_package]))
    steps.append("python3 -m pip install -q --upgrade pip")
    steps.append(
        _remote_join(
            ["python3", "-m", "pip", "install", "-q", f"{dist}[trainer] @ file://{cfg.remote_package}"]
        )
    )
    reqs, links = cfg.pip_runtime
    if reqs:
        extra = ["-f", links] if links else []
        steps.append(_remote_join(["python3", "-m", "pip", "install", "-q", *reqs, *extra]))
    return _ssh(cfg, "; ".join(steps))


def run_command(cfg: LaunchConfig) -> list[str]:
    """Runs ``python3 -m trainer.task`` with the given flags on every worker; gcloud streams the output."""
    env = [f"KERAS_BACKEND={cfg.backend}", "PYTHONUNBUFFERED=1", *cfg.env]
    remote = _remote_join([*env, "python3", "-m", "trainer.task", *cfg.task_args])
    return _ssh(cfg, remote)


def delete_command(cfg: LaunchConfig) -> list[str]:
    """Deletes the TPU VM, or the queued resource together with its VM."""
    if cfg.queued_resource:
        return [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            cfg.name,
            *_common(cfg),
            "--force",
            "--quiet",
        ]
    return ["gcloud", "compute", "tpus", "tpu-vm", "delete", cfg.name, *_common(cfg), "--quiet"]


def plan_lines(cfg: LaunchConfig) -> list[str]:
    """The whole launch as shell lines: what ``--dry_run`` prints."""
    lines = ["# create", shlex.join(create_command(cfg))]
    if cfg.queued_resource:
        lines += [
            f"# repeat every {QUEUED_POLL_S} s until it prints ACTIVE",
            shlex.join(queued_state_command(cfg)),
        ]
    copy = copy_package_command(cfg)
    lines.append("# install on every worker")
    if copy:
        lines.append(shlex.join(copy))
    lines += [shlex.join(install_command(cfg)), "# train on every worker", shlex.join(run_command(cfg))]
    if cfg.keep_vm:
        lines += ["# --keep_vm: not deleted; delete it with", "# " + shlex.join(delete_command(cfg))]
    else:
        lines += ["# delete (also after a failure or Ctrl-C)", shlex.join(delete_command(cfg))]
    return lines


def _run(cmd: list[str]) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _wait_until_active(cfg: LaunchConfig) -> None:
    deadline = time.monotonic() + cfg.queued_timeout_s
    while True:
        state = subprocess.run(
            queued_state_command(cfg), check=True, capture_output=True, text=True
        ).stdout.strip()
        print(f"queued resource {cfg.name}: {state}", flush=True)
        if state == "ACTIVE":
            return
        if state in ("FAILED", "SUSPENDED", "SUSPENDING"):
            raise RuntimeError(
                f"queued resource {cfg.name} is {state}; see `{shlex.join(queued_state_command(cfg))}`"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"queued resource {cfg.name} not ACTIVE after {cfg.queued_timeout_s} s (state {state})"
            )
        time.sleep(QUEUED_POLL_S)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def launch(cfg: LaunchConfig) -> int:
    """Creates the TPU, installs, trains, deletes. Returns the trainer's exit code."""
    if cfg.is_local_package and not os.path.isfile(cfg.package):
        raise FileNotFoundError(
            f"--package {cfg.package}: no such file (build it with `python setup.py sdist`)"
        )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    created = False
    try:
        try:
            _run(create_command(cfg))
        except KeyboardInterrupt:
            created = True  # interrupted half-way: the TPU may exist already
            raise
        # A create that fails (name taken, no quota) leaves nothing of ours to delete.
        created = True
        if cfg.queued_resource:
            _wait_until_active(cfg)
        copy = copy_package_command(cfg)
        if copy:
            _run(copy)
        _run(install_command(cfg))
        print("+ " + shlex.join(run_command(cfg)), flush=True)
        return subprocess.run(run_command(cfg)).returncode
    finally:
        if created and not cfg.keep_vm:
            # A second Ctrl-C must not leave a TPU billing: ignore it while deleting.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                print("+ " + shlex.join(delete_command(cfg)), flush=True)
                result = subprocess.run(delete_command(cfg))
                if result.returncode:
                    print(
                        f"WARNING: deleting {cfg.name} failed; delete it yourself:\n  "
                        f"{shlex.join(delete_command(cfg))}",
                        file=sys.stderr,
                    )
            finally:
                signal.signal(signal.SIGINT, previous)
        elif created:
            print(
                f"--keep_vm: {cfg.name} is still running; delete it with\n  {shlex.join(delete_command(cfg))}"
            )


def parse_args(argv: Sequence[str]) -> tuple[LaunchConfig, bool]:
    """Parses the launcher's flags; everything after ``--`` goes to ``trainer.task``."""
    argv = list(argv)
    task_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, task_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m trainer.launch_tpu",
        description="Create a TPU VM, install the trainer, run trainer.task on every worker, delete the VM.",
        epilog="Flags after `--` are passed to `python -m trainer.task` unchanged.",
    )
    parser.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--accelerator_type", required=True, help="e.g. v3-8, v4-32, v5litepod-8")
    parser.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU software version (runtime)")
    parser.add_argument(
        "--package", required=True, help="sdist or wheel of this project: local file or gs://"
    )
    parser.add_argument("--project", default=None)
    parser.add_argument(
        "--queued_resource", action="store_true", help="ask through a queued resource and wait"
    )
    parser.add_argument("--spot", action="store_true", help="Spot (preemptible) capacity")
    parser.add_argument("--backend", choices=sorted(RUNTIME_PIP), default="tensorflow", help="KERAS_BACKEND")
    parser.add_argument(
        "--runtime_pip",
        action="append",
        default=None,
        help="requirement for the backend's TPU runtime (repeatable; replaces the default)",
    )
    parser.add_argument("--find_links", default=None, help="pip -f index for --runtime_pip")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for trainer.task (repeatable)")
    parser.add_argument("--service_account", default=None, help="service account the TPU VM runs as")
    parser.add_argument("--keep_vm", action="store_true", help="do not delete the TPU VM at the end")
    parser.add_argument("--dry_run", action="store_true", help="print the gcloud commands, run nothing")
    args = parser.parse_args(argv)
    try:
        cfg = LaunchConfig(
            name=args.name,
            zone=args.zone,
            accelerator_type=args.accelerator_type,
            version=args.version,
            package=args.package,
            task_args=tuple(task_args),
            project=args.project,
            queued_resource=args.queued_resource,
            spot=args.spot,
            backend=args.backend,
            runtime_pip=None if args.runtime_pip is None else tuple(args.runtime_pip),
            find_links=args.find_links,
            env=tuple(args.env),
            service_account=args.service_account,
            keep_vm=args.keep_vm,
        )
    except ValueError as err:
        parser.error(str(err))
    return cfg, args.dry_run


def main(argv: Sequence[str] | None = None) -> int:
    cfg, dry_run = parse_args(sys.argv[1:] if argv is None else argv)
    if dry_run:
        print("\n".join(plan_lines(cfg)))
        return 0
    return launch(cfg)


if __name__ == "__main__":
    sys.exit(main())
