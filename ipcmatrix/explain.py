"""``ipcmatrix explain KEY``: what a key measures, the course-notes claim behind it, what
each platform is expected to do and why, and what a given run observed."""
from __future__ import annotations

import difflib

from ipcmatrix import catalogue, expectations, rules, view

# The course notes ("10 Domain Sockets") claim these; a key tests the claim of the longest
# prefix that matches it.  Quotes are the notes' own words, lightly trimmed.
COURSE_NOTES = {
    "seed.example.server_received":
        ("`recv-unix` only grabs the first 3 bytes, and discards the rest (done in datagram mode)",
         "Named: Example"),
    "seed.example.replies":
        ("`recv-unix` then sends back the bytes to the sender, formatting the bytes a bit",
         "Named: Example"),
    "seed.example.server_saw_client_path":
        ("`recvfrom()` gives client address structure to `&clnt_un`, so we know it and can send it back",
         "Named: Example"),
    "seed.flood.":
        ("What if send a lot of messages, like 1000? Stuck!!! ... Deadlock :( Linux: `sendto()` "
         "mimics pipe (blocks if filled up); Mac: `sendto()` mimics network (fails if filled up)",
         "Named: What if send a lot of messages"),
    "dgram.truncation.":
        ("`recv-unix` only grabs the first 3 bytes, and discards the rest (done in datagram mode; "
         "in TCP, it will continue to read the last bytes)", "Named: Example"),
    "dgram.reliable_in_order":
        ("Reliable when used in datagram mode (since not on network); nice because it preserves "
         "message boundaries", "UNIX domain sockets"),
    "dgram.full.":
        ("Linux: `sendto()` mimics pipe (blocks if filled up); Mac: `sendto()` mimics network "
         "(fails if filled up)", "Named: What if send a lot of messages"),
    "dgram.queue.":
        ("1000 message floods the receiving buffer of the server side inside the kernel",
         "Named: What if send a lot of messages"),
    "dgram.unbound_sender.has_address":
        ("UDP: both call `bind()`; `recvfrom()` gives client address structure, so we know it "
         "and can send it back", "Named: Example"),
    "socketpair.":
        ("Unnamed pair of connected sockets for related processes, created by "
         "`socketpair(AF_UNIX, ...)` (ana `AF_INET`)", "Unnamed socket pair"),
    "socketpair.full_duplex": ("just like a pipe, but full duplex", "Unnamed socket pair"),
    "stream.short_read_keeps_rest":
        ("In TCP, it will continue to read the last 5 bytes", "Named: Example"),
    "names.bind.file_type":
        ("represented by a named special file (type `s`)", "Named"),
    "fdpass.shared_offset":
        ("Two table entries from different processes, with different fds, point to the same "
         "file table entry", "Passing open fd"),
    "fdpass.shared_status_flags":
        ("Two table entries from different processes, with different fds, point to the same "
         "file table entry", "Passing open fd"),
    "fdpass.lowest_free_fd": ("Other process receives it; allocates the next unused fd",
                              "Passing open fd"),
    "pipe.write_to_read_end": ("Unnamed pipe (`pipe()`), half duplex", "Passing data"),
    "fifo.": ("Unrelated processes: named pipe, half duplex", "Passing data"),
    "names.bind.": ("created by `socket(AF_UNIX, ...)`, represented by a named special file "
                    "(ana `bind()` in IP)", "Named"),
    "speed.unix_stream_over_tcp": ("Much faster than TCP", "Named"),
    "speed.unix_stream_over_pipe": ("Speed like local pipe, but no overhead", "Named"),
    "shm.anon_shared_across_fork":
        ("Anonymous mapping `mmap()` with `MAP_SHARED | MAP_ANONYMOUS`, and then `fork()`",
         "Shared Memory"),
    "shm.file_shared_unrelated":
        ("`mmap()` with `MAP_SHARED`, backed up by a real file with `open()`, or virtual file "
         "with `shm_open()`", "Shared Memory"),
    "sem.unnamed_process_shared":
        ("Unnamed semaphore: `sem_init()` and `sem_destroy()` (shared memory required)", "Synchro"),
    "sem.named.": ("Named semaphore: `sem_open()`, `sem_close()`, `sem_unlink()`; naming "
                   "requirements...", "Synchro"),
    "sync.pthread_mutex_process_shared":
        ("pthread mutex, but initialized with `PTHREAD_PROCESS_SHARED` attribute", "Synchro"),
    "sync.pipe_token": ("Pipes (named or unnamed), great for synchro", "Synchro"),
    "net.tcp.": ("TCP socket: full duplex, reliable, not preserving message boundaries; "
                 "messages may be chopped or coalesced", "Passing data"),
    "net.udp.": ("UDP socket: full duplex, unreliable, preserved message boundary",
                 "Passing data"),
}


class UnknownKey(LookupError):
    """A key no probe declares; the message lists the closest ones."""


def course_note(key):
    """(quote, section) of the course-notes claim ``key`` tests, or None."""
    fitting = [p for p in COURSE_NOTES if key == p or (p.endswith(".") and key.startswith(p))]
    return COURSE_NOTES[max(fitting, key=len)] if fitting else None


def close_matches(key, known):
    prefixed = sorted(k for k in known if k.startswith(key))
    return list(dict.fromkeys(prefixed[:8] + difflib.get_close_matches(key, known, n=5, cutoff=0.6)))


def observation_of(key):
    known = catalogue.catalogue()
    if key in known:
        return known[key]
    near = close_matches(key, known)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise UnknownKey(f"no observation key {key!r}.{hint} (`ipcmatrix list` shows every key)")


def explain(key, tables, data=None, source=""):
    """The explanation as lines of text."""
    observation = observation_of(key)
    lines = [f"{key}  (family {observation.family})", "", "What it measures:",
             f"  {observation.claim or '(the probe states no claim)'}", ""]
    note = course_note(key)
    lines.append("Course notes:")
    lines.append(f'  "{note[0]}"  (10 Domain Sockets, {note[1]})' if note
                 else "  no claim of the course notes is tested by this key")
    lines += ["", "Expected:"]
    for table in tables:
        lines += expected_lines(key, table)
    if data is not None:
        lines += ["", *observed_lines(key, data, source)]
    return lines


def expected_lines(key, table):
    entries = table.entries.get(key)
    head = f"  {table.name} ({table.platform.get('system')}"
    if table.platform.get("release"):
        head += f" {table.platform['release']}"
    if not entries:
        return [head + f"): no expectation in {table.path.name}"]
    lines = [head + ")"]
    for index, entry in enumerate(entries):
        conditions = [f"{name} {entry[name]}" for name in ("release", "machine") if name in entry]
        where = table.where(key, index)
        lines.append(f"    {rules.describe(entry)}" + (f"  when {', '.join(conditions)}" if conditions else "")
                     + f"  [{entry.get('evidence')}]  ({where})")
        lines.append(f"      evidence: {EVIDENCE_WORDS.get(entry.get('evidence'), 'not stated')}")
        lines.append(f"      ref:  {entry.get('ref')}")
        if entry.get("note"):
            lines.append(f"      note: {entry['note']}")
        if entry.get("observed_on"):
            seen = entry["observed_on"]
            seen = "; ".join(map(str, seen)) if isinstance(seen, list) else seen
            lines.append(f"      observed on: {seen}")
        lines += reported_lines(entry, table.platform.get("system", ""))
    return lines


EVIDENCE_WORDS = {
    "observed": "observed: a run of this kit on a real machine saw it",
    "reported": "reported: others saw it on a real machine (a test suite on that platform's CI, "
                "or real output quoted in an issue)",
    "source": "source only: derived from the platform's code or documentation, never seen",
}


def reported_lines(entry, system):
    """One line per report: the link, where to open it, and the release it was seen on."""
    lines = []
    for report in expectations.reports_of(entry):
        url = expectations.link_url(report["link"], system)
        shown = report["link"] if url in (None, report["link"]) else f"{report['link']}  <{url}>"
        lines.append(f"      reported by: {shown}" + (f"  (on {report['on']})" if report["on"] else ""))
    return lines


def observed_lines(key, data, source):
    """What a report (untrusted) says about ``key``; every field is shown as inert text."""
    where = f"{view.text(source)}: " if source else ""
    label = view.platform_label(data.get("platform"))
    observations = data.get("observations") if isinstance(data.get("observations"), dict) else {}
    if key not in observations or not isinstance(observations[key], dict):
        return [f"Last observed ({where}{label}):", "  not measured in this report"]
    r = view.row(key, observations[key])
    lines = [f"Last observed ({where}{label}, table {view.text(data.get('table')) or 'none'}):"]
    if r.kind in ("error", "timeout"):
        lines.append(f"  {r.kind}: {r.observed}")
    else:
        lines.append(f"  value:    {r.observed}" + (f"  ({r.detail})" if r.detail else ""))
    if r.expected:
        lines.append(f"  expected: {r.expected}  ({r.rule})")
    lines.append(f"  verdict:  {view.text(r.verdict)}")
    return lines

