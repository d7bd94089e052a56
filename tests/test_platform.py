"""The platform layer, fed the recorded outputs of machines we do not have.

``tests/fixtures/platforms/*.txt`` are transcripts of ``uname``, ``sw_vers`` and
``sysctl`` (reconstructed from sources where no machine was available: each file says
which).  ``Recorded`` replays one to ``identify`` in place of the real commands.  The
values the tests expect come from the research notes, not from the fixtures.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest

from ipcmatrix import cli, expectations
from ipcmatrix.platform import (IPC_TUNABLES, TUNABLES, formula_names, identify, read_proc_sys, read_sysctls,
                                release_of, version_tuple)
from ipcmatrix.session import Conformance

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "platforms"
Uname = namedtuple("Uname", "sysname nodename release version machine")


class Recorded:
    """One machine's recorded command outputs, answering ``run`` as that machine would."""

    def __init__(self, path, stop_at_unknown=False):
        self.path = Path(path)
        self.outputs = parse_transcript(self.path.read_text())
        self.sysctls = dict(line.split(": ", 1) for line in self._output_of("sysctl ")
                            .splitlines() if ": " in line)
        # FreeBSD's sysctl warns about an unknown name and goes on; a sysctl that stops
        # at the first one is replayed too, since the kit must cope with either.
        self.stop_at_unknown = stop_at_unknown
        self.calls = []

    def _output_of(self, prefix):
        return next((out for command, out in self.outputs.items() if command.startswith(prefix)), "")

    @property
    def first_line(self):
        return self.path.read_text().splitlines()[0]

    def without(self, *names):
        """The same machine, had it no sysctl of these names."""
        for name in names:
            del self.sysctls[name]
        return self

    def uname(self):
        sysname, nodename, release = self.outputs["uname -a"].split()[:3]
        assert release == self.outputs["uname -r"].strip(), "the transcript contradicts itself"
        return Uname(sysname, nodename, release, "", self.outputs["uname -m"].strip())

    def product_version(self):
        for line in self.outputs.get("sw_vers", "").splitlines():
            if line.startswith("ProductVersion:"):
                return line.split(":", 1)[1].strip()
        return ""

    def mac_ver(self):
        return (self.product_version(), ("", "", ""), self.outputs["uname -m"].strip())

    def run(self, argv, **options):
        self.calls.append(list(argv))
        program, arguments = os.path.basename(argv[0]), list(argv[1:])
        if program == "sysctl" and arguments[:1] == ["-n"]:
            return self._sysctl(argv, arguments[1:])
        if program == "sw_vers" and arguments == ["-productVersion"] and self.product_version():
            return subprocess.CompletedProcess(argv, 0, self.product_version() + "\n", "")
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    def _sysctl(self, argv, names):
        out, err = [], []
        for name in names:
            if name in self.sysctls:
                out.append(self.sysctls[name])
                continue
            err.append(f"sysctl: unknown oid '{name}'")
            if self.stop_at_unknown:
                break
        return subprocess.CompletedProcess(argv, 1 if err else 0, "".join(v + "\n" for v in out),
                                           "".join(e + "\n" for e in err))

    def identify(self, **changes):
        sources = {"uname": self.uname, "mac_ver": self.mac_ver, "run": self.run,
                   "proc_sys": "/nonexistent"}
        return identify(**{**sources, **changes})


def parse_transcript(text):
    """``$ command`` lines, each followed by its output; ``#`` lines are comments."""
    outputs, command = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("$ "):
            command = line[2:].strip()
            outputs[command] = ""
        elif command is not None:
            outputs[command] += line + "\n"
    return outputs


def recorded(name, **options):
    return Recorded(FIXTURES / f"{name}.txt", **options)


# --- what each machine should come out as (from the research notes, not the fixtures) ---

MACOS_DEFAULTS = {  # macos-facts B8, B16, B15
    "net.local.dgram.maxdgram": 2048, "net.local.dgram.recvspace": 4096,
    "net.local.stream.sendspace": 8192, "net.local.stream.recvspace": 8192,
    "kern.ipc.maxsockbuf": 8 << 20, "kern.ipc.somaxconn": 128, "kern.ipc.soqlimitcompat": 1}
FREEBSD_14_DEFAULTS = {  # freebsd-facts section 0, B16, B15
    "net.local.dgram.maxdgram": 2048, "net.local.dgram.recvspace": 16384,
    "net.local.stream.sendspace": 8192, "net.local.stream.recvspace": 8192,
    "kern.ipc.maxsockbuf": 2 << 20, "kern.ipc.somaxconn": 128, "kern.ipc.soacceptqueue": 128}
FREEBSD_15_DEFAULTS = {**FREEBSD_14_DEFAULTS, "net.local.dgram.maxdgram": 8192,
                       "net.local.stream.sendspace": 65536, "net.local.stream.recvspace": 65536}

MACHINES = {
    # fixture: (name, system, release, kernel, machine, tunables, table)
    "macos-14.5-arm64": ("macos", "Darwin", "14.5", "23.5.0", "arm64", MACOS_DEFAULTS, "macos"),
    "macos-14.5-x86_64": ("macos", "Darwin", "14.5", "23.5.0", "x86_64", MACOS_DEFAULTS, "macos"),
    "macos-15.4-arm64": ("macos", "Darwin", "15.4", "24.4.0", "arm64", MACOS_DEFAULTS, "macos"),
    "macos-15.4-x86_64": ("macos", "Darwin", "15.4", "24.4.0", "x86_64", MACOS_DEFAULTS, "macos"),
    "freebsd-14.1-amd64": ("freebsd", "FreeBSD", "14.1", "14.1-RELEASE-p3", "amd64",
                           FREEBSD_14_DEFAULTS, "freebsd"),
    "freebsd-15.0-amd64": ("freebsd", "FreeBSD", "15.0", "15.0-RELEASE", "amd64",
                           FREEBSD_15_DEFAULTS, "freebsd"),
}


def test_every_fixture_says_whether_it_was_captured():
    files = sorted(FIXTURES.glob("*.txt"))
    assert {f.stem for f in files} >= set(MACHINES)
    for path in files:
        assert Recorded(path).first_line.startswith(("# RECONSTRUCTED", "# CAPTURED")), path


@pytest.mark.parametrize("fixture", sorted(MACHINES))
def test_identify_reads_the_recorded_machine(fixture):
    name, system, release, kernel, machine, tunables, _ = MACHINES[fixture]
    block = recorded(fixture).identify()
    assert (block["name"], block["system"], block["release"], block["kernel"], block["machine"]) \
        == (name, system, release, kernel, machine)
    assert block["tunables"] == tunables


@pytest.mark.parametrize("fixture", sorted(MACHINES))
def test_all_tunables_are_asked_for_in_one_sysctl_call(fixture):
    machine = recorded(fixture)
    machine.identify()
    sysctl_calls = [call for call in machine.calls if os.path.basename(call[0]) == "sysctl"
                    and call[2:] != ["sysctl.proc_translated"]
                    and not set(call[2:]) <= set(IPC_TUNABLES[MACHINES[fixture][0]])]
    assert len(sysctl_calls) == 1
    assert sysctl_calls[0][1:] == ["-n", *TUNABLES[MACHINES[fixture][0]]]


def test_under_rosetta_the_machine_is_the_kernels_arm64():
    machine = recorded("macos-15.4-x86_64")
    machine.sysctls["sysctl.proc_translated"] = "1"
    block = machine.identify()
    assert (block["machine"], block["translated"]) == ("arm64", True)
    native = recorded("macos-15.4-x86_64").identify()   # an Intel Mac has no such sysctl
    assert (native["machine"], native["translated"]) == ("x86_64", False)


def test_macos_release_is_the_product_version_not_the_darwin_kernel():
    block = recorded("macos-14.5-arm64").identify()
    assert version_tuple(block["release"])[0] == 14
    assert version_tuple(block["kernel"])[0] == 23


@pytest.mark.parametrize("fixture", sorted(MACHINES))
def test_the_platforms_table_is_selected(fixture):
    block = recorded(fixture).identify()
    table = expectations.table_for(block, expectations.load_all())
    assert table.name == MACHINES[fixture][6]
    assert table.platform["system"] == block["system"]


@pytest.mark.parametrize("fixture", sorted(MACHINES))
def test_deadlines_and_tolerances_come_from_the_platforms_table(fixture, tmp_path):
    conformance = Conformance(tmp_path / "cache", platform=recorded(fixture).identify(),
                              timeout_multiplier=2)
    table = conformance.table
    assert table.name == MACHINES[fixture][6]
    assert conformance.probe_deadline == table.platform["probe_deadline_s"] * 2
    environment = conformance.probe_environment()
    assert float(environment["IPCMATRIX_BLOCK_WINDOW"]) == table.platform["block_window_s"]
    assert float(environment["IPCMATRIX_TIMING_TOLERANCE_MS"]) == table.platform["timing_tolerance_ms"]
    # Slower CI machines: neither BSD table may be stricter than Linux's.
    linux = next(t for t in expectations.load_all() if t.name == "linux")
    assert table.setting("probe_deadline_s") >= linux.setting("probe_deadline_s")


# --- release conditions in entries -----------------------------------------------------

CONDITIONED = """
[platform]
system = "{system}"

[["probe.behaviour"]]
expect = "before-14"
release = "<14"
ref = "test"
evidence = "source"

[["probe.behaviour"]]
expect = "14.x"
release = ">=14, <15"
ref = "test"
evidence = "source"

[["probe.behaviour"]]
expect = "15-or-later"
release = ">=15"
ref = "test"
evidence = "source"

[["probe.queue"]]
expect = "any machine"
ref = "test"
evidence = "source"

[["probe.queue"]]
expect = "Apple silicon, 14 or later"
release = ">=14"
machine = "arm64"
ref = "test"
evidence = "source"

[["probe.point_release"]]
expect = "before 14.1"
release = "<14.1"
ref = "test"
evidence = "source"

[["probe.point_release"]]
expect = "14.1 or later"
release = ">=14.1"
ref = "test"
evidence = "source"
"""


def conditioned_table(tmp_path, system):
    path = tmp_path / f"{system}.toml"
    path.write_text(CONDITIONED.format(system=system))
    return expectations.load(path)


def resolved(table, block, key):
    entry = table.entry_for(key, block["release"], block["machine"])
    return entry and entry["expect"]


@pytest.mark.parametrize("fixture, behaviour, queue", [
    # Darwin 23/24 would wrongly pick ">=15" for both if the kernel's number were used.
    ("macos-14.5-arm64", "14.x", "Apple silicon, 14 or later"),
    ("macos-14.5-x86_64", "14.x", "any machine"),
    ("macos-15.4-arm64", "15-or-later", "Apple silicon, 14 or later"),
    ("macos-15.4-x86_64", "15-or-later", "any machine"),
])
def test_macos_release_conditions_resolve_by_product_version(tmp_path, fixture, behaviour, queue):
    block = recorded(fixture).identify()
    table = conditioned_table(tmp_path, "Darwin")
    assert resolved(table, block, "probe.behaviour") == behaviour
    assert resolved(table, block, "probe.queue") == queue


@pytest.mark.parametrize("fixture, behaviour, point", [
    ("freebsd-14.1-amd64", "14.x", "14.1 or later"),
    ("freebsd-15.0-amd64", "15-or-later", "14.1 or later"),
])
def test_freebsd_release_conditions_resolve_by_release_number(tmp_path, fixture, behaviour, point):
    block = recorded(fixture).identify()
    table = conditioned_table(tmp_path, "FreeBSD")
    assert resolved(table, block, "probe.behaviour") == behaviour
    assert resolved(table, block, "probe.point_release") == point


@pytest.mark.parametrize("kernel, release", [
    ("14.1-RELEASE-p3", "14.1"), ("15.0-RELEASE", "15.0"), ("14.2-STABLE", "14.2"),
    ("16.0-CURRENT", "16.0"), ("13.4-RELEASE-p1", "13.4")])
def test_freebsd_release_is_the_number_before_the_branch(kernel, release):
    assert release_of("freebsd", kernel) == release
    assert release_of("linux", "6.18.44-fc") == "6.18.44-fc"


# --- tunables that are missing, and a machine without sysctl ---------------------------------

@pytest.mark.parametrize("stop_at_unknown", [False, True], ids=["warns-and-goes-on", "stops"])
def test_a_missing_sysctl_name_is_none_and_the_others_keep_their_values(stop_at_unknown):
    machine = recorded("macos-15.4-arm64", stop_at_unknown=stop_at_unknown)
    machine.without("net.local.dgram.recvspace")
    tunables = machine.identify()["tunables"]
    assert tunables["net.local.dgram.recvspace"] is None
    # Read in one call, the values after the missing name would have moved up a line.
    assert tunables == {**MACOS_DEFAULTS, "net.local.dgram.recvspace": None}


def test_no_sysctl_binary_leaves_every_tunable_missing_and_selects_the_table_all_the_same():
    machine = recorded("freebsd-14.1-amd64")
    calls = []

    def no_sysctl(argv, **options):
        calls.append(argv)
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    block = machine.identify(run=no_sysctl)
    assert block["tunables"] == dict.fromkeys(TUNABLES["freebsd"])
    assert len(calls) == 2, "a missing sysctl is not retried name by name (one try per group)"
    assert block["ipc_tunables"] == dict.fromkeys(IPC_TUNABLES["freebsd"])
    assert block["release"] == "14.1"
    assert expectations.table_for(block, expectations.load_all()).name == "freebsd"


def test_a_sysctl_that_hangs_is_given_up_on_once():
    calls = []

    def hangs(argv, timeout=None, **options):
        calls.append(argv)
        raise subprocess.TimeoutExpired(argv, timeout)

    assert read_sysctls(["kern.ipc.somaxconn", "kern.ipc.maxsockbuf"], run=hangs) == {
        "kern.ipc.somaxconn": None, "kern.ipc.maxsockbuf": None}
    assert len(calls) == 1


def test_text_values_stay_text():
    def run(argv, **options):
        return subprocess.CompletedProcess(argv, 0, "Darwin\n128\n", "")

    assert read_sysctls(["kern.ostype", "kern.ipc.somaxconn"], run=run) == {
        "kern.ostype": "Darwin", "kern.ipc.somaxconn": 128}


# --- macOS versions that are hard to read -------------------------------------------------------

def test_the_compatibility_version_10_16_is_checked_with_sw_vers():
    machine = recorded("macos-14.5-arm64")
    block = machine.identify(mac_ver=lambda: ("10.16", ("", "", ""), "arm64"))
    assert block["release"] == "14.5"
    assert ["sw_vers", "-productVersion"] in machine.calls


def test_an_unknown_macos_release_selects_the_table_but_no_conditioned_entry(tmp_path):
    machine = recorded("macos-14.5-arm64")
    machine.outputs.pop("sw_vers")
    block = machine.identify(mac_ver=lambda: ("", ("", "", ""), ""))
    assert block["release"] == "" and block["kernel"] == "23.5.0"
    assert expectations.table_for(block, expectations.load_all()).name == "macos"
    table = conditioned_table(tmp_path, "Darwin")
    assert resolved(table, block, "probe.behaviour") is None      # not even "<14"
    assert resolved(table, block, "probe.queue") == "any machine"


# --- a platform nobody has described -----------------------------------------------------------

def test_an_unknown_platform_says_how_to_record_it_with_bless():
    block = recorded("sunos-5.11-i86pc").identify()
    assert (block["name"], block["release"], block["tunables"]) == ("sunos", "5.11", {})
    with pytest.raises(expectations.UnknownPlatform) as raised:
        expectations.table_for(block, expectations.load_all())
    message = str(raised.value)
    assert "SunOS 5.11 (i86pc)" in message
    command = shlex.split(message.splitlines()[-1])
    assert command[:2] == ["ipcmatrix", "bless"]
    assert command[-2:] == ["--platform", "sunos-5"]
    if "bless" not in cli.COMMANDS:
        pytest.skip("`ipcmatrix bless` is not in the command line yet (issue 7): "
                    "the suggested command was checked only for its shape")
    arguments = cli.parser().parse_args(command[1:])
    assert arguments.command == "bless" and arguments.platform == "sunos-5"


def test_a_run_on_an_unknown_platform_keeps_the_default_deadlines(tmp_path):
    conformance = Conformance(tmp_path / "cache", platform=recorded("sunos-5.11-i86pc").identify())
    assert conformance.table is None
    assert "ipcmatrix bless" in conformance.unknown_platform
    assert conformance.probe_deadline == expectations.PLATFORM_DEFAULTS["probe_deadline_s"]


# --- Linux, from /proc/sys -------------------------------------------------------------------------

def test_linux_tunables_come_from_proc_sys_and_a_missing_one_is_none(tmp_path):
    for name, value in {"net.unix.max_dgram_qlen": "512\n", "net.core.wmem_default": "212992\n",
                        "fs.pipe-max-size": "1048576\n"}.items():
        path = tmp_path.joinpath(*name.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    linux = Uname("Linux", "ci", "6.8.0-1017-azure", "#20-Ubuntu", "x86_64")
    block = identify(uname=lambda: linux, run=None, proc_sys=str(tmp_path))
    assert (block["name"], block["release"], block["kernel"]) == ("linux", "6.8.0-1017-azure",
                                                                  "6.8.0-1017-azure")
    assert block["tunables"]["net.unix.max_dgram_qlen"] == 512
    assert block["tunables"]["fs.pipe-max-size"] == 1048576
    assert block["tunables"]["net.core.somaxconn"] is None


def test_this_linux_machine_is_identified_as_it_is():
    if os.uname().sysname != "Linux":
        pytest.skip(f"this test reads /proc/sys; this machine is {os.uname().sysname}")
    block = identify()
    assert (block["name"], block["release"]) == ("linux", os.uname().release)
    assert block["tunables"]["net.unix.max_dgram_qlen"] == read_proc_sys("net.unix.max_dgram_qlen")


def test_a_short_name_two_tunables_share_must_be_written_in_full():
    names = formula_names({"tunables": {"net.local.dgram.recvspace": 16384,
                                        "net.local.stream.recvspace": 65536,
                                        "net.local.dgram.maxdgram": 8192}})
    assert "recvspace" not in names
    assert names["net.local.dgram.recvspace"] == 16384 and names["maxdgram"] == 8192
