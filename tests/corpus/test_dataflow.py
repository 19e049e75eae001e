"""The corpus stage's job graph builds for Dataflow offline (dry run), touching no input file."""

from __future__ import annotations

import pytest

from beam_pipelines.corpus import stage
from tests.corpus.helpers import parse_corpus_args

pytestmark = pytest.mark.dataflow


def test_dataflow_dry_run_builds_the_graph(repo_root):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    config = parse_corpus_args(["--input", "gs://no-such-bucket/oscar/hi_meta_part_*.jsonl.zst",
                                "--output_dir", "gs://no-such-bucket/out", "--num_shards", "4"])
    options = PipelineOptions(["--runner=DataflowRunner", "--dry_run=True", "--project=hindi-bert-test", "--region=us-central1",
                               "--temp_location=gs://no-such-bucket/tmp", f"--setup_file={repo_root}/setup.py"])
    pipeline = beam.Pipeline(options=options)
    stage.build_pipeline(pipeline, config)
    pipeline.run()
    names = {t.unique_name for t in pipeline.runner.proto_pipeline.components.transforms.values()}
    for step in ("ReadCorpus/ReadRecords", "CleanDocuments/FilterNormalizeSegment", "DeduplicateDocuments/KeepFirst",
                 "WriteCorpus/WriteCorpusShards/WriteShard", "WriteRejected/WriteRejectedShards/WriteShard"):
        assert step in names
