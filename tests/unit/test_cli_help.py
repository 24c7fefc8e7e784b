"""Every flag of every EDDL command explains itself, and every entry point tells its version.

The walk covers ``eddl`` with its sub-commands (recursively), the daemons and
``python -m eddl.profiler``: an option added without ``help=`` fails here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from importlib.metadata import version

import pytest

from eddl.cli import build_parser as eddl_parser
from eddl.cli.help import HelpFormatter, Parser, config_defaults
from eddl.leader.config import LeaderConfig
from eddl.leader.main import build_parser as leader_parser
from eddl.profiler.__main__ import build_parser as profiler_parser
from eddl.worker.main import build_parser as worker_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "eddl": eddl_parser,
    "eddl-leader": leader_parser,
    "eddl-worker": worker_parser,
    "python -m eddl.profiler": profiler_parser,
}
# argparse's own actions: their help is argparse's.
_BUILTIN = (argparse._HelpAction, argparse._VersionAction)


def _walk(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def _missing_help(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, _BUILTIN):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(f"{path}: {name}")
        if isinstance(action, argparse._SubParsersAction):
            # Each sub-command's one-line help, shown in the parent's listing.
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            missing += [
                f"{path} {cmd}: (no summary)" for cmd in action.choices if not listed.get(cmd)
            ]
    return missing


@pytest.mark.parametrize("entry", sorted(PARSERS))
def test_every_flag_of_every_command_has_help(entry: str) -> None:
    walked = list(_walk(PARSERS[entry](), entry))
    missing = [m for path, parser in walked for m in _missing_help(parser, path)]
    assert missing == []
    if entry == "eddl":  # the walk reached the nested commands
        paths = {path for path, _ in walked}
        assert {"eddl train", "eddl mcu sim", "eddl mcu qemu", "eddl local"} <= paths


def test_the_walk_finds_a_flag_without_help() -> None:
    parser = Parser(prog="x")
    sub = parser.add_subparsers(dest="cmd", help="command")
    inner = sub.add_parser("inner", help="a command").add_subparsers(dest="c2", help="again")
    leaf = inner.add_parser("leaf")  # no summary
    leaf.add_argument("--quiet", action="store_true")  # no help
    found = [m for path, p in _walk(parser, "x") for m in _missing_help(p, path)]
    assert found == ["x inner leaf: (no summary)", "x inner leaf: --quiet"]


@pytest.mark.parametrize("entry", sorted(PARSERS))
def test_every_entry_point_prints_the_installed_version(
    entry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        PARSERS[entry]().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"{entry} {version('eddl')}"


def _help_of(parser: argparse.ArgumentParser, flag: str) -> str:
    action = next(a for a in parser._actions if flag in a.option_strings)
    return " ".join(HelpFormatter("x")._get_help_string(action).split())  # type: ignore[union-attr]


def test_help_shows_defaults_that_say_something() -> None:
    parser = Parser(prog="x")
    parser.add_argument("--rounds", type=int, default=5, help="rounds")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--json", action="store_true", help="as JSON")
    parser.add_argument("--lr", type=float, help="learning rate (default: per algo)")
    parser.add_argument("--token", default="s3cret", help="token (default: $TOKEN, else none)")
    parser.add_argument("--path", help="where")
    assert _help_of(parser, "--rounds") % {"default": 5} == "rounds (default: 5)"
    assert _help_of(parser, "--seed") % {"default": 0} == "seed (default: 0)"
    assert _help_of(parser, "--json") == "as JSON"
    assert _help_of(parser, "--lr") == "learning rate (default: per algo)"
    assert "s3cret" not in parser.format_help()  # a help that names its default keeps it
    assert _help_of(parser, "--path") == "where"


def test_train_help_states_the_defaults_of_the_main_flags() -> None:
    train = next(p for path, p in _walk(eddl_parser(), "eddl") if path == "eddl train")
    text = " ".join(train.format_help().split())
    for shown in (
        "training algorithm (default: lsgd)",
        "(default: digits)",
        "number of simulated clients (default: 4)",
        "federated rounds (default: 5)",
        "(partition, initial weights, sampling) (default: 0)",
    ):
        assert shown in text


def test_daemon_help_shows_the_configuration_defaults() -> None:
    defaults = config_defaults(LeaderConfig)
    text = " ".join(leader_parser().format_help().split())
    assert f"(default: {defaults['bind']})" in text
    assert f"(default: {defaults['heartbeat_interval_s']})" in text


def _flags(path: str) -> set[str]:
    parser = next(p for at, p in _walk(eddl_parser(), "eddl") if at == path)
    return {flag for action in parser._actions for flag in action.option_strings}


def test_train_commands_spell_their_flags_alike() -> None:
    train, mcu_train = _flags("eddl train"), _flags("eddl mcu train")
    shared = {"--algo", "--dataset", "--seed", "--lr", "--lr-inv", "--lr-shift", "--buffer"}
    assert shared | {"--batch-size", "--local-epochs", "--json"} <= train & mcu_train
    # Pre-training counts rounds in a simulated federation, samples on one device: the unit is
    # in the name. The old spellings are gone (not even as aliases).
    assert "--pretrain-rounds" in train and "--pretrain-samples" in mcu_train
    assert not {"--batch", "--pretrain"} & (train | mcu_train)
    args = eddl_parser().parse_args(
        ["mcu", "train", "socket://127.0.0.1:1", "--algo", "lsgd-q8", "--batch-size", "7"]
    )
    assert args.batch_size == 7 and args.pretrain_samples == 300
