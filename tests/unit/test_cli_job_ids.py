"""``eddl status`` and ``eddl watch`` take the job id positionally or as ``--job``."""

from __future__ import annotations

import pytest

from eddl.cli import build_parser
from eddl.cli.jobs import _job_of
from eddl.config import ConfigError


@pytest.mark.parametrize("command", ["status", "watch"])
def test_job_id_positional_option_or_latest(command: str) -> None:
    parser = build_parser()
    assert _job_of(parser.parse_args([command, "job-1"])) == "job-1"
    assert _job_of(parser.parse_args([command, "--job", "job-2"])) == "job-2"
    assert _job_of(parser.parse_args([command, "job-3", "--job", "job-3"])) == "job-3"
    assert _job_of(parser.parse_args([command])) == ""


def test_two_different_job_ids_are_refused() -> None:
    args = build_parser().parse_args(["watch", "job-1", "--job", "job-2"])
    with pytest.raises(ConfigError, match="two different job ids"):
        _job_of(args)
