"""The fleet simulator's ``auto`` topology: the root's flags, and its promotions read back from
the JSON log the root writes (the real logger's output, not hand-written lines)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.fleet_split import auto_flags, promoted, promotions
from eddl.leader.groupdirector import Regroup
from eddl.leader.groupedge import log_regroup
from eddl.leader.splitting import Group, NodeLink
from eddl.log import configure_logging, get_logger


def test_the_root_is_told_to_act_on_a_declared_link() -> None:
    flags = auto_flags(8.0)
    assert flags[flags.index("--split") + 1] == "auto"
    assert flags[flags.index("--link-capacity-mbps") + 1] == "8"
    with pytest.raises(ValueError, match="Mbit/s"):
        auto_flags(0.0)


def _root_log(path: Path, *, regroup: bool) -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    log = get_logger("eddl.leader.split")
    log.info("split_decision", action="promote", groups=2, reason="busy", workers=5, link_busy=1.0)
    print("not json", file=out)
    if regroup:
        groups = (Group("sub0", ("d1", "d2")), Group("sub1", ("d3",)))
        nodes = (NodeLink("d1", 1e5, 10.0),)
        log_regroup(Regroup("promote", groups, "busy", nodes, 1.0))
    path.write_text(out.getvalue())


def test_a_promotion_is_a_decision_then_the_groups_it_formed(tmp_path: Path) -> None:
    log = tmp_path / "leader.log"
    assert not promoted(log)  # no log yet
    _root_log(log, regroup=False)
    assert not promoted(log)  # decided, no groups formed yet
    _root_log(log, regroup=True)
    [found] = promotions(log)
    assert found.groups == {"sub0": ["d1", "d2"], "sub1": ["d3"]}
    assert (found.workers, found.link_busy, found.reason) == (5, 1.0, "busy")
    assert found.at.tzinfo is not None
