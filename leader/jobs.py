"""The leader's view of jobs: :class:`~eddl.jobspec.JobSpec` and its parsing, re-exported.

The spec lives in :mod:`eddl.jobspec` so that the ``eddl`` CLI and the leader share one
parse-and-validate path; the checks that build the model are in :mod:`eddl.jobcheck`.
"""

from __future__ import annotations

from eddl.jobspec import (
    AGGREGATIONS,
    ASYNC_RULES,
    DISTRIBUTIONS,
    JobSpec,
    load_job_file,
    parse_job_toml,
)

__all__ = [
    "AGGREGATIONS",
    "ASYNC_RULES",
    "DISTRIBUTIONS",
    "JobSpec",
    "load_job_file",
    "parse_job_toml",
]
