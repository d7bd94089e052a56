"""The macOS and FreeBSD tables pick the right rule for each release and machine, and leave
no key without one.

Nobody here has a Mac or a FreeBSD machine, so these tables are all written from source
(research notes macos-facts.md, freebsd-facts.md).  What can be checked here is that
their release and machine conditions select what the notes say for the releases people
run (macOS 10.15 to 15.4 on Apple silicon and Intel, FreeBSD 14 and 15), that every key
has an entry on each of them, and that every formula can be worked out with the
tunables those machines report (tests/fixtures/platforms/*.txt).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ipcmatrix import catalogue, expectations, rules
from ipcmatrix.platform import IPC_TUNABLES, TUNABLES, alias, formula_names

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "platforms"

MAC_RELEASES = ["10.14.6", "10.15.7", "11.6", "13.6", "14.5", "15.4"]
MAC_MACHINES = ["arm64", "x86_64"]
BSD_RELEASES = ["14.1", "15.0"]
BSD_MACHINES = ["amd64", "arm64"]
PLATFORMS = ([("macos", r, m) for r in MAC_RELEASES for m in MAC_MACHINES if (r, m) != ("10.14.6", "arm64")]
             + [("freebsd", r, m) for r in BSD_RELEASES for m in BSD_MACHINES])

# Observation values a formula may read, as these platforms would report them (the notes'
# defaults): enough to work every formula out.
OBSERVED = {"macos": {"dgram.sndbuf_default": 2048, "pipe.capacity": 65536},
            "freebsd": {"dgram.sndbuf_default": 16384, "pipe.capacity": 65536}}
# System V limits as shipped (xnu bsd/kern/sysv_shm.c shminfo; FreeBSD sys/kern/sysv_shm.c
# SHMMAXPGS * PAGE_SIZE, sysv_msg.c MSGMNB): the fixtures' sysctl transcripts predate them.
IPC_DEFAULTS = {"macos": {"kern.sysv.shmmax": 4194304},
                "freebsd": {"kern.ipc.shmmax": 536870912, "kern.ipc.msgmnb": 2048}}


@pytest.fixture(scope="module")
def tables():
    loaded = expectations.load_all(known_keys=set(catalogue.catalogue()))
    return {t.name: t for t in loaded}


def recorded_tunables(fixture):
    """The ``name: value`` lines a recorded ``sysctl`` printed in a fixture transcript."""
    values, in_sysctl = {}, False
    for line in (FIXTURES / f"{fixture}.txt").read_text().splitlines():
        if line.startswith("$ "):
            in_sysctl = line.startswith("$ sysctl ")
        elif in_sysctl and ": " in line:
            name, value = line.split(": ", 1)
            values[name] = int(value)
    return values


def fixture_for(platform, release):
    if platform == "macos":  # the notes give macOS 14 and 15 the same defaults; older too
        return "macos-15.4-arm64" if release.startswith("15") else "macos-14.5-arm64"
    return f"freebsd-{release}-amd64"


def names_for(platform, release):
    block = {"tunables": recorded_tunables(fixture_for(platform, release)),
             "ipc_tunables": IPC_DEFAULTS[platform], "rlimit_nofile": [1024, 1024]}
    return {**formula_names(block), **OBSERVED[platform]}


def selected(table, key, release, machine):
    entry = table.entry_for(key, release, machine)
    assert entry is not None, f"{table.name} {release} {machine}: no entry for {key}"
    return entry


def holds(table, key, release, machine, value):
    """Whether ``value`` meets the rule the table selects for this release and machine."""
    platform = table.name
    matched, _ = rules.judge(selected(table, key, release, machine), value,
                             names_for(platform, release))
    return matched


# --- no holes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("platform, release, machine", PLATFORMS + [("macos", "", ""), ("freebsd", "", "")])
def test_every_key_has_exactly_one_best_entry_on_each_release(tables, platform, release, machine):
    """Release conditions must not leave a key without a rule, nor two rules tied for it.

    An empty release is a machine whose version could not be read: it satisfies no
    condition, so each key needs an unconditioned entry too.
    """
    table = tables[platform]
    for key in catalogue.catalogue():
        fitting = [e for e in table.entries.get(key, []) if expectations.applies(e, release, machine)]
        assert fitting, f"{platform} {release or '(unknown)'} {machine}: no entry for {key}"
        rank = [("release" in e) + ("machine" in e) for e in fitting]
        assert rank.count(max(rank)) == 1, f"{platform} {release} {machine}: {key} has tied entries"


@pytest.mark.parametrize("platform", ["macos", "freebsd"])
def test_nothing_is_claimed_as_observed_without_saying_where(tables, platform):
    """No Mac or FreeBSD run has been made: "observed" only ever comes with observed_on (bless),
    "reported" only with the links that report it."""
    for key, entries in tables[platform].entries.items():
        for entry in entries:
            evidence = entry["evidence"]
            assert evidence == "source" or (evidence == "observed" and entry.get("observed_on")) \
                or (evidence == "reported" and entry.get("reported_by")), key


# --- what the notes say changed between releases --------------------------------------------

@pytest.mark.parametrize("release, works", [
    ("10.15.7", False), ("11.6", True), ("13.6", True), ("14.5", True), ("15.4", True)])
@pytest.mark.parametrize("machine", MAC_MACHINES)
def test_msg_nosignal_exists_from_macos_11(tables, release, machine, works):
    mac = tables["macos"]
    assert holds(mac, "stream.msg_nosignal", release, machine, "ok") is works
    assert holds(mac, "stream.msg_nosignal", release, machine, "unsupported") is not works
    assert holds(mac, "stream.so_nosigpipe", release, machine, "ok")  # every release


@pytest.mark.parametrize("release, sees_the_full_peer", [
    ("11.6", False), ("12.7", False), ("13.6", True), ("14.5", True), ("15.4", True)])
@pytest.mark.parametrize("machine", MAC_MACHINES)
def test_poll_sees_a_full_connected_peer_from_macos_13(tables, release, machine, sees_the_full_peer):
    mac = tables["macos"]
    assert holds(mac, "dgram.full.poll_writable_connected", release, machine,
                 not sees_the_full_peer)
    assert holds(mac, "dgram.full.poll_writable_unconnected", release, machine, True)


@pytest.mark.parametrize("release, longest, not_longest", [
    ("10.14.6", 30, 31), ("10.15.7", 31, 30), ("15.4", 31, 30)])
def test_the_shm_name_limit_grew_with_macos_10_15(tables, release, longest, not_longest):
    mac = tables["macos"]
    assert holds(mac, "shm.posix.name_max", release, "x86_64", longest)
    assert not holds(mac, "shm.posix.name_max", release, "x86_64", not_longest)
    assert holds(mac, "sem.named.name_max", release, "x86_64", 30)  # never changed


@pytest.mark.parametrize("release, machine, predicted, wrong", [
    ("10.15.7", "x86_64", 64, 32), ("13.6", "arm64", 64, 32), ("14.5", "x86_64", 64, 32),
    ("15.4", "x86_64", 64, 32), ("14.5", "arm64", 32, 64), ("15.4", "arm64", 32, 64)])
@pytest.mark.parametrize("key", ["dgram.queue.capacity_unconnected", "dgram.queue.capacity_socketpair"])
def test_apple_silicon_from_macos_14_queues_half_as_many_datagrams(tables, key, release, machine,
                                                                    predicted, wrong):
    """512-byte mbufs on arm64 from macOS 14 (macos-facts B7b): 32 small datagrams, not 64."""
    mac = tables["macos"]
    assert holds(mac, key, release, machine, predicted)
    assert not holds(mac, key, release, machine, wrong)
    assert not holds(mac, key, release, machine, predicted + 1)


@pytest.mark.parametrize("key, on_14, on_15", [
    ("seqpacket.boundaries_preserved", True, False),
    ("seqpacket.truncation.rest_discarded", True, False),
    ("seqpacket.truncation.msg_trunc_flag", True, False),
    ("seqpacket.truncation.received", "ABC", "ABC"),
    ("seqpacket.peer_closed.read", "eof", "eof")])
@pytest.mark.parametrize("machine", BSD_MACHINES)
def test_freebsd_15_seqpacket_keeps_records_only_at_msg_eor(tables, key, on_14, on_15, machine):
    bsd = tables["freebsd"]
    assert holds(bsd, key, "14.1", machine, on_14)
    assert holds(bsd, key, "15.0", machine, on_15)
    if on_14 != on_15:
        assert not holds(bsd, key, "14.1", machine, on_15)
        assert not holds(bsd, key, "15.0", machine, on_14)


@pytest.mark.parametrize("release, maxdgram", [("14.1", 2048), ("15.0", 8192)])
def test_freebsd_datagram_limits_come_from_the_dgram_sysctls(tables, release, maxdgram):
    """Read at run time (freebsd-facts section 0), never the stream sysctls of the same name."""
    bsd = tables["freebsd"]
    assert holds(bsd, "dgram.max_size", release, "amd64", maxdgram)
    assert not holds(bsd, "dgram.max_size", release, "amd64", 16384 - 16)
    # 16384 = net.local.dgram.recvspace; the alias "recvspace" is the stream one (8 or 64 KiB)
    assert holds(bsd, "dgram.sndbuf_default", release, "amd64", 16384)
    assert not holds(bsd, "dgram.sndbuf_default", release, "amd64",
                     recorded_tunables(fixture_for("freebsd", release))["net.local.stream.recvspace"])
    assert holds(bsd, "dgram.queue.capacity_unconnected", release, "amd64", 256)
    assert not holds(bsd, "dgram.queue.capacity_unconnected", release, "amd64", 64)


@pytest.mark.parametrize("platform, release, machine, value, wrong", [
    ("macos", "14.5", "arm64", 1, 2), ("macos", "10.15.7", "x86_64", 1, 2),
    ("freebsd", "14.1", "amd64", 2, 1), ("freebsd", "15.0", "amd64", 2, 1)])
def test_listen_1_takes_backlog_or_one_and_a_half_times_it(tables, platform, release, machine,
                                                           value, wrong):
    """macOS (soqlimitcompat=1): exactly backlog; FreeBSD: floor(3*backlog/2)+1."""
    table = tables[platform]
    assert holds(table, "stream.backlog.pending_accepted", release, machine, value)
    assert not holds(table, "stream.backlog.pending_accepted", release, machine, wrong)


def test_a_macos_fifo_holds_a_stream_sockets_worth_not_a_pipes(tables):
    mac = tables["macos"]
    assert holds(mac, "fifo.capacity", "15.4", "arm64", 8192)
    assert not holds(mac, "fifo.capacity", "15.4", "arm64", 65536)
    assert holds(tables["freebsd"], "fifo.capacity", "14.1", "amd64", 65536)


# --- formulas -------------------------------------------------------------------------------------

def formulas(entry):
    kind = rules.kind_of(entry)
    if kind in ("formula", "at_least", "at_most"):
        return [entry[kind]]
    if kind == "range":
        return [bound for bound in entry[kind] if isinstance(bound, str)]
    return []


@pytest.mark.parametrize("platform", ["macos", "freebsd"])
def test_formulas_name_only_keys_and_unambiguous_tunables(tables, platform):
    """A tunable alias two tunables share (``recvspace``: dgram and stream) must be spelled out."""
    tunables = TUNABLES[platform] + IPC_TUNABLES[platform]
    aliases = [alias(name) for name in tunables]
    ambiguous = {a for a in aliases if aliases.count(a) > 1}
    known = set(catalogue.catalogue()) | set(tunables) | set(aliases) | {"rlimit_nofile"}
    for key, entries in tables[platform].entries.items():
        for entry in entries:
            for formula in formulas(entry):
                used = rules.names_in(formula)
                assert used <= known, f"{platform} {key}: unknown names {used - known}"
                assert not used & ambiguous, f"{platform} {key}: ambiguous alias {used & ambiguous}"


@pytest.mark.parametrize("platform, release, machine", PLATFORMS)
def test_every_formula_works_out_with_the_recorded_tunables(tables, platform, release, machine):
    table, names = tables[platform], names_for(platform, release)
    for key in catalogue.catalogue():
        entry = selected(table, key, release, machine)
        for formula in formulas(entry):
            value = rules.evaluate(formula, names)
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, formula)
        if rules.kind_of(entry) == "range" and formulas(entry):
            low, high = (rules.evaluate(b, names) if isinstance(b, str) else b for b in entry["range"])
            assert 0 < low <= high, (key, low, high)


# --- refs --------------------------------------------------------------------------------------------

def test_every_macos_ref_to_xnu_source_names_its_tag(tables):
    """'bsd/kern/uipc_usrreq.c#L573' is only a source with the xnu tag its lines belong to."""
    for key, entries in tables["macos"].entries.items():
        for entry in entries:
            ref = entry["ref"]
            if re.search(r"\b(bsd|osfmk|config|libsyscall)/", ref):
                assert re.search(r"xnu-\d+(\.\d+)+ ", ref), f"{key}: {ref}"


def test_every_freebsd_ref_to_kernel_source_gives_its_path(tables):
    for key, entries in tables["freebsd"].entries.items():
        for entry in entries:
            ref = entry["ref"]
            for named in re.findall(r"(\S*)uipc_(?:usrreq|socket|sockbuf|syscalls)\.c", ref):
                assert named.endswith("sys/kern/"), f"{key}: {ref}"
