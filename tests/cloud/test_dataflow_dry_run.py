"""The Dataflow jobs of ``beam_pipelines.build``, built offline with ``--dry_run=True`` (marked ``dataflow``).

The documented cloud command, with ``--dry_run=True`` added, builds every stage's job graph,
environment and staged package without reaching GCS or the Dataflow API; these tests check
the steps, the options and the staged ``workflow.tar.gz`` that Dataflow workers would install.
Run them with ``pytest -m dataflow tests/cloud``.
"""

from __future__ import annotations

import ast
import base64
import bz2
import email
import socket
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.dataflow

BUCKET = "hindi-bert-dry-run"
PROJECT = "hindi-bert-dry-run"
REGION = "us-central1"
OUTPUT_DIR = f"gs://{BUCKET}/out"
ARGV = [
    "--runner=DataflowRunner", "--dry_run=True", f"--project={PROJECT}", f"--region={REGION}",
    f"--temp_location=gs://{BUCKET}/tmp", "--setup_file=./setup.py",
    f"--input=gs://{BUCKET}/oscar/hi_meta_part_*.jsonl.zst", f"--output_dir={OUTPUT_DIR}",
]
# The top-level steps of each stage's job, as the Dataflow console shows them.
STEPS = {
    "corpus": {"ReadCorpus", "CleanDocuments", "DeduplicateDocuments", "WriteCorpus",
               "MalformedToRejection", "AllRejections", "WriteRejected", "AllFiles"},
    "vocab": {"ReadCorpus", "CountWords", "WriteWordCounts", "LearnVocabulary", "WriteTokenizer"},
    "pretraining": {"CorpusFiles", "MatchTrain", "MatchValidation", "TagTrain", "TagValidation",
                    "CreatePretrainingExamples", "WriteExamples", "WriteStats"},
}
# Imported by beam_pipelines but used only on the launching machine (report plots in finalize).
LAUNCHER_ONLY = {"matplotlib"}


@pytest.fixture(scope="module")
def dry_run(repo_root):
    """Runs the documented Dataflow command with --dry_run=True from the repository root.

    Every network connection of this process fails and is recorded (a GCS emulator of other
    tests is hidden too), so the dry run must touch neither GCS nor the Dataflow API.
    """
    from beam_pipelines import build

    attempts: list[object] = []
    real_connect = socket.socket.connect

    def no_network_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"dry run tried to connect to {address}")
        return real_connect(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo_root)
        for name in ("STORAGE_EMULATOR_HOST", "ALL_PROXY", "https_proxy", "HTTPS_PROXY"):
            mp.delenv(name, raising=False)
        mp.setattr(socket.socket, "connect", no_network_connect)
        results = build.run(list(ARGV))
    assert attempts == []
    return results


def _top_level_steps(job) -> set[str]:
    transforms = job.proto_pipeline.components.transforms.values()
    return {t.unique_name for t in transforms if "/" not in t.unique_name and not t.unique_name.startswith("ref_")}


def _staged_files(job) -> dict[str, Path]:
    from apache_beam.portability.api import beam_runner_api_pb2

    staged = {}
    for env in job.proto_pipeline.components.environments.values():
        for dep in env.dependencies:
            role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload)
            staged[role.staged_name] = Path(beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path)
    return staged


def test_every_stage_builds_a_dataflow_job(dry_run):
    import apache_beam as beam

    assert list(dry_run) == ["corpus", "vocab", "pretraining"]
    for stage, result in dry_run.items():
        job = result.job
        assert STEPS[stage] <= _top_level_steps(job), stage
        images = {e.payload for e in job.proto_pipeline.components.environments.values()}
        assert any(f"beam_python{sys.version_info.major}.{sys.version_info.minor}_sdk:{beam.__version__}".encode()
                   in image for image in images), images


def test_job_options_are_staged(dry_run):
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, StandardOptions

    for stage, result in dry_run.items():
        options = result.job.options
        cloud = options.view_as(GoogleCloudOptions)
        assert options.view_as(StandardOptions).runner == "DataflowRunner", stage
        assert (cloud.project, cloud.region) == (PROJECT, REGION), stage
        assert cloud.temp_location.startswith(f"gs://{BUCKET}/tmp/"), stage
        assert cloud.staging_location.startswith(f"gs://{BUCKET}/tmp/"), stage
        assert options.view_as(SetupOptions).setup_file == "./setup.py", stage
        assert result.job.root_staging_location == f"gs://{BUCKET}/tmp", stage


def test_workers_read_and_write_only_gcs(dry_run, repo_root):
    """No step refers to the bundled sample or any other local data; outputs go to --output_dir."""
    from apache_beam.portability.api import beam_runner_api_pb2

    sample_dir = str(repo_root / "beam_pipelines" / "sample_data").encode()
    for stage, result in dry_run.items():
        writes_output = False
        for t in result.job.proto_pipeline.components.transforms.values():
            if t.spec.urn != "beam:transform:pardo:v1":
                continue
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn.payload
            pickled = bz2.decompress(base64.b64decode(payload))
            assert sample_dir not in pickled, f"{stage}: step {t.unique_name} refers to {sample_dir.decode()}"
            writes_output |= OUTPUT_DIR.encode() in pickled
        assert writes_output, f"{stage}: no step refers to {OUTPUT_DIR}"


@pytest.fixture(scope="module")
def workflow_package(dry_run) -> tarfile.TarFile:
    staged = [_staged_files(result.job) for result in dry_run.values()]
    assert all("workflow.tar.gz" in s for s in staged)
    return tarfile.open(staged[0]["workflow.tar.gz"])


def test_staged_package_holds_the_pipeline_code(workflow_package):
    names = {n.split("/", 1)[1] for n in workflow_package.getnames() if "/" in n}
    for module in ("beam_pipelines/build.py", "beam_pipelines/io_utils.py", "beam_pipelines/corpus/stage.py",
                   "beam_pipelines/vocab/stage.py", "beam_pipelines/pretraining/stage.py", "setup.py"):
        assert module in names, module
    top_level = next(m for m in workflow_package.getmembers() if m.name.endswith(".egg-info/top_level.txt"))
    installed = set(workflow_package.extractfile(top_level).read().decode().split())
    assert installed == {"beam_pipelines", "conversion", "trainer"}


def test_workers_get_the_pipeline_dependencies(workflow_package, repo_root):
    """Everything beam_pipelines imports is in the Dataflow container or installed with the package.

    Dataflow workers run ``pip install workflow.tar.gz``: the package's unconditional
    requirements, no extras. The container brings apache-beam[gcp] and its requirements.
    """
    pkg_info = next(m for m in workflow_package.getmembers() if m.name.count("/") == 1 and m.name.endswith("PKG-INFO"))
    info = email.message_from_bytes(workflow_package.extractfile(pkg_info).read())
    installed = {_dist_name(r) for r in info.get_all("Requires-Dist") or [] if "extra ==" not in r}
    beam_meta = metadata.metadata("apache-beam")
    container = {"apache-beam"} | {_dist_name(r) for r in beam_meta.get_all("Requires-Dist")
                                   if "extra ==" not in r or 'extra == "gcp"' in r}
    container |= {_dist_name(r) for name in ("google-cloud-storage",) for r in metadata.requires(name) or []
                  if "extra ==" not in r}
    providers = metadata.packages_distributions()
    missing = {}
    for module, files in _third_party_imports(repo_root / "beam_pipelines").items():
        if module in LAUNCHER_ONLY:
            continue
        dists = {_normalize(d) for d in providers.get(module, [module])}
        if not dists & (installed | container):
            missing[module] = sorted(files)[:3]
    assert missing == {}, f"not installed on Dataflow workers (add to install_requires): {missing}"


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _dist_name(requirement: str) -> str:
    head = requirement.split(";")[0].strip()
    for sep in "<>=!~[( ":
        head = head.split(sep)[0]
    return _normalize(head)


def _third_party_imports(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != package.name:
                    found.setdefault(top, set()).add(str(path.relative_to(package.parent)))
    return found
