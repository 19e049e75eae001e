"""The vocab stage (not built yet)."""


def add_arguments(group) -> None:
    pass


def config_from_args(args):
    raise ValueError("stage 'vocab' is not available yet")


def preflight(config) -> None:
    pass


def build_pipeline(p, config) -> None:
    raise NotImplementedError


def finalize(config, result):
    return None
