"""deploy/ stays in step with the daemons: configs load, units pass only known flags."""

from __future__ import annotations

import configparser
import copy
import dataclasses
import fnmatch
import re
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eddl.config import load_config
from eddl.leader.config import LeaderConfig
from eddl.leader.main import build_parser as leader_parser
from eddl.worker.config import WorkerConfig, mcu_names
from eddl.worker.main import build_parser as worker_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROLES = {
    "leader": (LeaderConfig, leader_parser),
    "worker": (WorkerConfig, worker_parser),
}


def _env_file(role: str) -> dict[str, str]:
    env = {}
    for line in (DEPLOY / "systemd" / f"{role}.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _unit(role: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "systemd" / f"eddl-{role}.service").read_text())
    return unit


@pytest.mark.parametrize("role", sorted(ROLES))
def test_example_config_and_env_load_through_the_config_class(role: str) -> None:
    cls, _ = ROLES[role]
    env = _env_file(role)
    assert all(k.startswith(f"EDDL_{role.upper()}_") for k in env)
    config: LeaderConfig | WorkerConfig = load_config(
        cls, role, DEPLOY / "config" / f"{role}.toml", environ=env
    )
    assert config.join_token  # the secret came from the environment file
    table = tomllib.loads((DEPLOY / "config" / f"{role}.toml").read_text())[role]
    assert "join_token" not in table and "admin_token" not in table


@pytest.mark.parametrize("role", sorted(ROLES))
def test_unit_runs_the_daemon_with_flags_it_knows(role: str) -> None:
    _, parser = ROLES[role]
    service = _unit(role)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == f"eddl-{role}"
    scripts = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert f"eddl-{role}" in scripts
    args = parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert args.config == f"/etc/eddl/{role}.toml"
    assert service["KillSignal"] == "SIGTERM"
    assert service["EnvironmentFile"].lstrip("-") == f"/etc/eddl/{role}.env"
    assert service["User"] == "eddl"


# ---- deploy/pi-gateway: udev names, gateway config, systemd drop-in ----

GATEWAY = DEPLOY / "pi-gateway"
RULES = GATEWAY / "99-eddl-mcu.rules"
DROP_IN = GATEWAY / "eddl-gateway.conf"
GATEWAY_CONFIG = "/etc/eddl/gateway.toml"
DROP_IN_TARGET = "/etc/systemd/system/eddl-worker.service.d/gateway.conf"

# udev(7): keys that only match, keys that only assign, keys that do both; keys taking {arg}.
_MATCH_ONLY = {
    "ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS",
    "ATTRS", "TAGS", "PROGRAM", "RESULT", "TEST", "CONST",
}  # fmt: skip
_ASSIGN_ONLY = {"OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS"}
_BOTH = {"NAME", "SYMLINK", "ENV", "TAG", "ATTR", "SYSCTL"}
_NEEDS_ARG = {"ATTR", "ATTRS", "ENV", "SYSCTL", "IMPORT", "SECLABEL", "CONST"}
_MAY_TAKE_ARG = _NEEDS_ARG | {"TEST", "RUN"}
_MATCH_OPS = {"==", "!="}
_ASSIGN_OPS = {"=", "+=", "-=", ":="}
_FIELD = re.compile(
    r'\s*(?P<key>[A-Z_]+)(?:\{(?P<arg>[^{}"]+)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*'
    r'"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,(?=\s*\S)|$)'
)


@dataclass(frozen=True)
class UdevField:
    key: str
    arg: str | None
    op: str
    value: str

    @property
    def matches(self) -> bool:
        return self.op in _MATCH_OPS


def parse_udev_rules(text: str, where: str = "rules") -> list[list[UdevField]]:
    """Rules of a udev rules file, each a list of fields; raises ValueError on bad syntax."""
    rules: list[list[UdevField]] = []
    lines = text.replace("\\\n", " ").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        at = f"{where}:{number}"
        fields, pos = [], 0
        while pos < len(line):
            m = _FIELD.match(line, pos)
            if m is None:
                raise ValueError(f'{at}: expected KEY op "value" at {line[pos:]!r}')
            fields.append(UdevField(m["key"], m["arg"], m["op"], m["value"]))
            pos = m.end()
        for f in fields:
            _check_udev_field(f, at)
        rules.append(fields)
    labels = [f.value for rule in rules for f in rule if f.key == "LABEL"]
    for i, rule in enumerate(rules):
        later = {f.value for r in rules[i + 1 :] for f in r if f.key == "LABEL"}
        for f in rule:
            if f.key == "GOTO" and f.value not in later:
                raise ValueError(f"{where}: GOTO {f.value!r} has no LABEL after it ({labels})")
    return rules


def _check_udev_field(f: UdevField, at: str) -> None:
    if f.key not in _MATCH_ONLY | _ASSIGN_ONLY | _BOTH:
        raise ValueError(f"{at}: unknown key {f.key}")
    if f.key in _NEEDS_ARG and not f.arg:
        raise ValueError(f"{at}: {f.key} needs {{...}}")
    if f.arg and f.key not in _MAY_TAKE_ARG:
        raise ValueError(f"{at}: {f.key} takes no {{...}}")
    allowed = (
        {"="}
        if f.key in {"LABEL", "GOTO"}
        else _MATCH_OPS
        if f.key in _MATCH_ONLY
        else _ASSIGN_OPS
        if f.key in _ASSIGN_ONLY
        else _MATCH_OPS | _ASSIGN_OPS
    )
    if f.op not in allowed:
        raise ValueError(f"{at}: {f.key} does not take {f.op}")


@dataclass
class SysNode:
    """One device on a tty device's sysfs path (the device itself first, then its parents)."""

    kernel: str
    subsystem: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class UdevEvent:
    """What udev holds for one tty event when this file's rules run (after 60-serial.rules'
    usb_id and Raspberry Pi OS's 99-com.rules), and what the rules leave behind."""

    chain: list[SysNode]
    env: dict[str, str] = field(default_factory=dict)
    symlinks: list[str] = field(default_factory=list)
    action: str = "add"
    group: str = "root"
    mode: str = "0600"

    @property
    def eddl_links(self) -> list[str]:
        return [s for s in self.symlinks if s.startswith("eddl/")]


def _glob(value: str, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def _field_ok(f: UdevField, value: str | None) -> bool:
    hit = value is not None and _glob(value, f.value)
    return hit if f.op == "==" else not hit


def _own_ok(f: UdevField, ev: UdevEvent) -> bool:
    if f.key == "SYMLINK":  # matches when any of the device's links matches
        hit = any(_glob(link, f.value) for link in ev.symlinks)
        return hit if f.op == "==" else not hit
    return _field_ok(f, _own_value(f, ev))


def _own_value(f: UdevField, ev: UdevEvent) -> str:
    own = ev.chain[0]
    values = {"ACTION": ev.action, "KERNEL": own.kernel, "SUBSYSTEM": own.subsystem}
    if f.key == "ENV":
        return ev.env.get(f.arg or "", "")
    if f.key in values:
        return values[f.key]
    raise ValueError(f"the rule evaluator does not know match key {f.key}")


def _parent_value(f: UdevField, node: SysNode) -> str | None:
    if f.key == "ATTRS":
        return node.attrs.get(f.arg or "")
    if f.key == "SUBSYSTEMS":
        return node.subsystem
    if f.key == "KERNELS":
        return node.kernel
    raise ValueError(f"the rule evaluator does not know match key {f.key}")


def _substitute(value: str, ev: UdevEvent, parent: SysNode | None) -> str:
    def one(m: re.Match[str]) -> str:
        if m[1] is not None:
            return ev.env.get(m[1], "")
        if m[0] == "%b" and parent is not None:
            return parent.kernel
        if m[0] in {"%k", "$kernel"}:
            return ev.chain[0].kernel
        raise ValueError(f"the rule evaluator cannot substitute {m[0]!r} in {value!r}")

    return re.sub(r"\$env\{([^}]+)\}|%[a-zA-Z%]|\$[a-z]+", one, value)


def run_udev_rules(rules: list[list[UdevField]], ev: UdevEvent) -> UdevEvent:
    """Apply ``rules`` to ``ev`` the way udev does for the keys these rules use."""
    labels = {f.value: i for i, rule in enumerate(rules) for f in rule if f.key == "LABEL"}
    i = 0
    while i < len(rules):
        rule, i = rules[i], i + 1
        own = [f for f in rule if f.matches and f.key not in {"ATTRS", "SUBSYSTEMS", "KERNELS"}]
        on_parent = [f for f in rule if f.matches and f.key in {"ATTRS", "SUBSYSTEMS", "KERNELS"}]
        if not all(_own_ok(f, ev) for f in own):
            continue
        # Like udev: every parent key of a rule must match on one and the same device.
        parent = next(
            (n for n in ev.chain if all(_field_ok(f, _parent_value(f, n)) for f in on_parent)),
            None,
        )
        if on_parent and parent is None:
            continue
        for f in (f for f in rule if not f.matches):
            value = _substitute(f.value, ev, parent)
            if f.key == "GOTO":
                i = labels[value]
            elif f.key == "ENV":
                ev.env[f.arg or ""] = value
            elif f.key == "SYMLINK" and f.op == "+=":
                ev.symlinks.extend(value.split())
            elif f.key == "GROUP":
                ev.group = value
            elif f.key == "MODE":
                ev.mode = value
            elif f.key != "LABEL":
                raise ValueError(f"the rule evaluator does not know {f.key}{f.op}")
    return ev


_PI4_HUB = {"idVendor": "2109", "idProduct": "3431"}  # the Raspberry Pi 4's on-board USB hub


def _usb_tty(kernel: str, vid: str, pid: str, port: str, serial: str = "") -> UdevEvent:
    usb_device = {"idVendor": vid, "idProduct": pid} | ({"serial": serial} if serial else {})
    chain = [SysNode(kernel, "tty")]
    if kernel.startswith("ttyUSB"):
        chain.append(SysNode(kernel, "usb-serial"))
    chain += [
        SysNode(f"{port}:1.0", "usb", {"bInterfaceNumber": "00"}),
        SysNode(port, "usb", usb_device),
    ]
    if "." in port:  # behind a hub, which has USB ids of its own
        chain.append(SysNode(port.rsplit(".", 1)[0], "usb", dict(_PI4_HUB)))
    chain.append(SysNode(f"usb{port[0]}", "usb", {"idVendor": "1d6b", "idProduct": "0002"}))
    # usb_id (60-serial.rules) has set ID_SERIAL_SHORT from the serial string, if there is one.
    return UdevEvent(chain, env={"ID_SERIAL_SHORT": serial} if serial else {})


def _pi_uart(kernel: str, alias: str) -> UdevEvent:
    # Raspberry Pi 3: the mini UART (ttyS0) and the PL011 (ttyAMA0), both built into the SoC.
    uart = (
        SysNode("3f215040.serial", "platform")
        if kernel == "ttyS0"
        else SysNode("3f201000.serial", "amba")
    )
    chain = [SysNode(kernel, "tty"), uart]
    return UdevEvent(chain, symlinks=[alias])  # 99-com.rules made /dev/serial0 or serial1


BOARDS: dict[str, tuple[UdevEvent, set[str]]] = {
    "ftdi": (
        _usb_tty("ttyUSB0", "0403", "6001", "1-1.2", "A50285BI"),
        {"eddl/mcu-A50285BI", "eddl/mcu-port-1-1.2"},
    ),
    "cp210x": (
        _usb_tty("ttyUSB1", "10c4", "ea60", "1-1.4", "0001"),
        {"eddl/mcu-0001", "eddl/mcu-port-1-1.4"},
    ),
    "ch340-no-serial": (_usb_tty("ttyUSB2", "1a86", "7523", "1-1.3"), {"eddl/mcu-port-1-1.3"}),
    "due-programming": (
        _usb_tty("ttyACM0", "2341", "003d", "1-1.1", "95735353036351E0F1C1"),
        {"eddl/mcu-95735353036351E0F1C1", "eddl/mcu-port-1-1.1"},
    ),
    "due-programming-arduino-org": (
        _usb_tty("ttyACM1", "2a03", "003d", "2-1", "85430353531351E03222"),
        {"eddl/mcu-85430353531351E03222", "eddl/mcu-port-2-1"},
    ),
    "due-native": (_usb_tty("ttyACM2", "2341", "003e", "1-1.1.4"), {"eddl/mcu-port-1-1.1.4"}),
    "st-link": (
        _usb_tty("ttyACM3", "0483", "374b", "1-1.1.3", "066DFF485550755187121226"),
        {"eddl/mcu-066DFF485550755187121226", "eddl/mcu-port-1-1.1.3"},
    ),
    "pi-uart": (_pi_uart("ttyS0", "serial0"), {"eddl/mcu-uart0"}),
}

NOT_BOARDS: dict[str, UdevEvent] = {
    "prolific-gps": _usb_tty("ttyUSB3", "067b", "2303", "1-1.1.1"),
    "bluetooth-uart": _pi_uart("ttyAMA0", "serial1"),
    "ftdi-removed": dataclasses.replace(
        _usb_tty("ttyUSB0", "0403", "6001", "1-1.2", "A50285BI"), action="remove"
    ),
}


def _rules() -> list[list[UdevField]]:
    return parse_udev_rules(RULES.read_text(), RULES.name)


def _links(event: UdevEvent) -> list[str]:
    return run_udev_rules(_rules(), copy.deepcopy(event)).eddl_links


def test_udev_rules_parse_as_udev_syntax_and_every_rule_is_commented() -> None:
    rules = _rules()
    assert rules
    for rule in rules:
        for f in rule:
            if f.key == "SYMLINK" and not f.matches:
                assert f.value.startswith("eddl/") and ".." not in f.value
            if f.key == "GROUP":
                assert f.value == "dialout"
            if f.key == "MODE":
                assert f.value == "0660"
    lines = RULES.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert lines[number - 1].startswith("#"), f"line {number + 1} has no comment above"


@pytest.mark.parametrize(
    "bad",
    [
        'SUBSYSTEM=="tty" SYMLINK+="eddl/x"',  # no comma
        "SUBSYSTEM==tty",  # unquoted value
        'SUBSYTEM=="tty"',  # unknown key
        'ATTRS{idVendor}="0403"',  # assignment to a match-only key
        'GROUP=="dialout"',  # comparison on an assign-only key
        'ENV="1"',  # ENV without {name}
        'GOTO="nowhere"',  # GOTO without its LABEL
        'SUBSYSTEM=="tty",',  # trailing comma
    ],
)
def test_udev_rule_checker_refuses_malformed_rules(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_udev_rules(bad + "\n")


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_udev_rules_give_each_board_stable_names_under_dev_eddl(board: str) -> None:
    event, expected = BOARDS[board]
    done = run_udev_rules(_rules(), copy.deepcopy(event))
    assert set(done.eddl_links) == expected
    assert (done.group, done.mode) == ("dialout", "0660")
    assert done.env["EDDL_MCU"] == "1" and done.env["ID_MM_DEVICE_IGNORE"] == "1"


@pytest.mark.parametrize("device", sorted(NOT_BOARDS))
def test_udev_rules_leave_other_serial_ports_alone(device: str) -> None:
    done = run_udev_rules(_rules(), copy.deepcopy(NOT_BOARDS[device]))
    assert done.eddl_links == [] and "EDDL_MCU" not in done.env
    assert (done.group, done.mode) == ("root", "0600")


def test_names_from_the_udev_rules_give_distinct_node_ids() -> None:
    links = [link for event, _ in BOARDS.values() for link in _links(event)]
    assert len(set(links)) == len(links)
    paths = [f"/dev/{link}" for link in links]
    # Every name survives mcu_names as it is (no fallback to a position-based "mcu<i>").
    assert mcu_names(paths) == [Path(p).name for p in paths]
    config = WorkerConfig(node_id="pi-gw-1", mcu=paths)
    node_ids = config.mcu_node_ids()
    assert len(set(node_ids)) == len(node_ids)
    assert node_ids == [f"pi-gw-1.{Path(p).name}" for p in paths]


def test_gateway_config_loads_through_worker_config() -> None:
    path = GATEWAY / "gateway.toml"
    config = load_config(WorkerConfig, "worker", path, environ=_env_file("worker"))
    assert config.join_token  # from worker.env, which the base unit still reads
    assert config.mcu and all(url.startswith("/dev/eddl/mcu-") for url in config.mcu)
    table = tomllib.loads(path.read_text())["worker"]
    assert "node_id" in table and "join_token" not in table  # a node id that survives restarts
    assert config.mcu_node_ids() == [f"{config.node_id}.{Path(u).name}" for u in config.mcu]
    defaults = WorkerConfig()
    mcu_keys = [f.name for f in dataclasses.fields(WorkerConfig) if f.name.startswith("mcu_")]
    assert mcu_keys and all(table[key] == getattr(defaults, key) for key in mcu_keys)


def test_gateway_config_names_boards_the_udev_rules_can_produce() -> None:
    config = load_config(WorkerConfig, "worker", GATEWAY / "gateway.toml", environ={})
    made = {link for event, _ in BOARDS.values() for link in _links(event)}
    assert {"eddl/mcu-A50285BI", "eddl/mcu-port-1-1.3", "eddl/mcu-uart0"} <= made
    assert {url.removeprefix("/dev/") for url in config.mcu} <= made


def _unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit file, in order, repeated keys kept."""
    entries, section = [], ""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def _drop_in() -> list[tuple[str, str, str]]:
    return _unit_entries(DROP_IN.read_text())


def _values(entries: list[tuple[str, str, str]], section: str, key: str) -> list[str]:
    return [v for s, k, v in entries if s == section and k == key]


def test_drop_in_runs_the_worker_on_the_gateway_config() -> None:
    starts = _values(_drop_in(), "Service", "ExecStart")
    assert starts[0] == "" and len(starts) == 2  # reset the base unit's command, then one
    argv = shlex.split(starts[1])
    base_argv = shlex.split(_unit("worker")["Service"]["ExecStart"])
    assert argv[0] == base_argv[0]  # the same eddl-worker the base unit runs
    args = worker_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert args.config == GATEWAY_CONFIG and not args.mcu  # boards come from the config
    readme = (GATEWAY / "README.md").read_text()
    assert f"deploy/pi-gateway/gateway.toml {GATEWAY_CONFIG}" in readme
    assert f"deploy/pi-gateway/eddl-gateway.conf {DROP_IN_TARGET}" in readme
    assert "deploy/pi-gateway/99-eddl-mcu.rules /etc/udev/rules.d/" in readme


def test_drop_in_opens_the_serial_ports_and_keeps_the_rest_of_the_sandbox() -> None:
    entries = _drop_in()
    rule_groups = {f.value for rule in _rules() for f in rule if f.key == "GROUP"}
    assert set(_values(entries, "Service", "SupplementaryGroups")) == rule_groups == {"dialout"}
    assert _values(entries, "Service", "DevicePolicy") == ["closed"]
    allowed = dict(v.split() for v in _values(entries, "Service", "DeviceAllow"))
    assert set(allowed) == {"char-ttyUSB", "char-ttyACM", "/dev/serial0"}
    assert all(set(rights) <= set("rw") for rights in allowed.values())  # no mknod
    # The device groups exist at start only if their drivers are loaded: modprobe@ first.
    for unit in ("modprobe@usbserial.service", "modprobe@cdc_acm.service"):
        for key in ("Wants", "After"):
            assert unit in " ".join(_values(entries, "Unit", key)).split()
    # Several boards come and go: nothing ties the service to one board's device unit.
    for key in ("BindsTo", "Requires", "Requisite", "PartOf"):
        assert not _values(entries, "Unit", key)
    assert not _values(entries, "Service", "PrivateDevices")
    # Nothing of the base unit's sandboxing (or anything else) is overridden but the command.
    # Wants= and After= in a drop-in add to the base unit's lists (an empty one would reset
    # them, dropping network-online.target).
    base = _unit("worker")
    overridden = {(s, k) for s, k, _ in entries if base.has_option(s, k)}
    assert overridden - {("Unit", "Wants"), ("Unit", "After")} == {
        ("Service", "ExecStart"),
        ("Unit", "Description"),
    }
    assert all(
        _values(entries, "Unit", key) and all(_values(entries, "Unit", key))
        for key in ("Wants", "After")
    )


# ---- the install layout: a venv under /opt/eddl, checked by systemd-analyze verify ----

VENV = "/opt/eddl"
UNITS = {"eddl-leader.service", "eddl-worker.service"}
_SYSTEM_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
)


def _install_commands() -> list[str]:
    """The shell commands of deploy/README.md's install block, one per line, comments dropped."""
    readme = (DEPLOY / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_installs_into_the_venv_the_units_run() -> None:
    commands = _install_commands()
    assert "sudo apt install python3-venv" in commands
    assert f"sudo python3 -m venv {VENV}" in commands
    assert f"sudo {VENV}/bin/pip install ." in commands
    # Debian 12 and Raspberry Pi OS bookworm refuse pip on the system Python (PEP 668).
    assert not [c for c in commands if "pip install" in c and not c.startswith(f"sudo {VENV}/")]
    starts = [_unit(role)["Service"]["ExecStart"] for role in ROLES]
    starts.append(_values(_drop_in(), "Service", "ExecStart")[1])
    assert {Path(shlex.split(cmd)[0]).parent for cmd in starts} == {Path(VENV) / "bin"}
    # The account the units run as is the one the README creates.
    users = {_unit(role)["Service"]["User"] for role in ROLES}
    groups = {_unit(role)["Service"]["Group"] for role in ROLES}
    made = [c for c in commands if c.startswith("sudo useradd --system")]
    assert users == groups == {"eddl"} and made and made[0].split()[-1] == "eddl"


def _console_script(name: str) -> Path:
    """The script pip made for ``name`` when it installed this package (the tests need it)."""
    path = Path(sysconfig.get_path("scripts")) / name
    found = str(path) if path.is_file() else shutil.which(name)
    assert found, f"{name} is not installed: pip install the package first"
    return Path(found)


def _installed_root(root: Path) -> None:
    """``root`` laid out as the README leaves a machine: the host's systemd units, the venv's
    console scripts in /opt/eddl/bin, EDDL's units and the gateway drop-in in
    /etc/systemd/system, and the eddl account (useradd) next to Debian's dialout group."""
    assert _SYSTEM_UNITS is not None
    shutil.copytree(_SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    bin_dir = root / VENV.lstrip("/") / "bin"
    bin_dir.mkdir(parents=True)
    # Copies, not symlinks: systemd resolves links inside the root, where the target is not.
    for name in ("eddl", "eddl-leader", "eddl-worker"):
        shutil.copy2(_console_script(name), bin_dir / name)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        shutil.copy2(DEPLOY / "systemd" / name, units / name)
    (units / "eddl-worker.service.d").mkdir()
    shutil.copy2(DROP_IN, units / "eddl-worker.service.d" / "gateway.conf")
    # systemd 252's verify does not look users up (that happens when a service starts); the
    # accounts are here so the root is the installed machine, not to quiet a warning.
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\neddl:x:999:999::/var/lib/eddl:/usr/sbin/nologin\n"
    )
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\neddl:x:999:\n")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.skipif(_SYSTEM_UNITS is None, reason="needs systemd's unit directory")
def test_systemd_analyze_verify_accepts_the_installed_units(tmp_path: Path) -> None:
    _installed_root(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}", *sorted(UNITS)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    printed = (done.stdout + done.stderr).strip()
    # Any line is a finding: systemd-analyze exits 0 on warnings such as an unknown key.
    assert done.returncode == 0 and printed == "", printed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.skipif(_SYSTEM_UNITS is None, reason="needs systemd's unit directory")
@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("unknown key", "Unknown key 'Bogus' in section [Service]"),
        ("no script", "Command /opt/eddl/bin/eddl-worker is not executable"),
    ],
)
def test_systemd_analyze_verify_reports_a_broken_layout(
    tmp_path: Path, breakage: str, expected: str
) -> None:
    """The check above can fail: a typo in the drop-in, a venv without the daemon."""
    _installed_root(tmp_path)
    if breakage == "unknown key":
        drop_in = tmp_path / "etc/systemd/system/eddl-worker.service.d/gateway.conf"
        drop_in.write_text(drop_in.read_text() + "Bogus=1\n")
    else:
        (tmp_path / "opt/eddl/bin/eddl-worker").unlink()
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}", "eddl-worker.service"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert expected in done.stdout + done.stderr


def test_gateway_readme_covers_every_file_it_ships() -> None:
    readme = (GATEWAY / "README.md").read_text()
    shipped = {p.name for p in GATEWAY.iterdir()} - {"README.md"}
    mentioned = set(re.findall(r"deploy/pi-gateway/([\w.-]+)", readme))
    assert shipped == mentioned
    steps = ["udevadm control --reload-rules", "udevadm trigger", "udevadm info", "raspi-config"]
    steps += ["enable_uart=1", "eddl mcu info /dev/eddl/", "eddl status"]
    assert [step for step in steps if step not in readme] == []
    assert "pi-gateway/README.md" in (DEPLOY / "README.md").read_text()
