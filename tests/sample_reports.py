"""Small hand-made reports for the report, compare, explain and bless tests."""
import copy
import json
import re

from ipcmatrix import report

LINUX = {"name": "linux", "system": "Linux", "release": "6.1.0", "kernel": "6.1.0",
         "machine": "x86_64", "python": "cpython 3.11.7", "uid": 1000, "root": False,
         "umask": "0022", "rlimit_nofile": [1024, 4096],
         "tunables": {"net.unix.max_dgram_qlen": 10, "net.core.wmem_default": 212992}}

MACOS = {"name": "macos", "system": "Darwin", "release": "26.0", "kernel": "25.0.0",
         "machine": "arm64", "python": "cpython 3.12.4", "uid": 501, "root": False,
         "umask": "0022", "rlimit_nofile": [256, 10240],
         "tunables": {"net.local.dgram.maxdgram": 2048, "net.local.dgram.recvspace": 4096}}

HOSTILE = '<script>document.title="pwned"</script>|`tick`\n# heading <img src=x onerror=alert(1)> &amp;'


def record(value=None, verdict="match", expected=None, rule=None, ref="af_unix.c unix_dgram_sendmsg",
           evidence="observed", note=None, error=None, table="linux"):
    out = {"probe": "dgram", "verdict": verdict, "table": table}
    if verdict != "no-expectation":
        out.update(rule=rule or f"expect: {value!r}", ref=ref, evidence=evidence,
                   expected=value if expected is None else expected)
    if note:
        out["note"] = note
    if error is not None:
        out["error"] = error
    else:
        out["value"] = value
    return out


def make(observations, platform=LINUX, version="0.1.0", **top):
    """A report that ``report.read`` accepts, with these observation records."""
    counts = {v: 0 for v in ("match", "mismatch", "error", "timeout", "no-expectation")}
    for r in observations.values():
        counts[r["verdict"]] += 1
    data = {"schema": report.SCHEMA, "kit": {"name": "ipcmatrix", "version": version},
            "platform": copy.deepcopy(platform), "table": f"{platform['name']}.toml",
            "unknown_platform": None, "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:00:01+00:00", "complete": True, "summary": counts,
            "probes": {"dgram": {"status": "ok", "elapsed_s": 0.2, "deadline_s": 20, "returncode": 0}},
            "observations": dict(sorted(observations.items()))}
    data.update(top)
    assert report.validate(data) == []
    return data


def save(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def linux_run(qlen=10, **changes):
    """A plausible Linux dgram run at this max_dgram_qlen; ``changes`` replace records."""
    platform = copy.deepcopy(LINUX)
    platform["tunables"]["net.unix.max_dgram_qlen"] = qlen
    capacity = min(qlen + 1, 278)
    observations = {
        "dgram.truncation.received": record("ABC"),
        "dgram.full.blocking_send": record("blocks"),
        "dgram.max_size": record(212960, rule="formula: 'dgram.sndbuf_default - 32'"),
        "dgram.queue.capacity_unconnected": record(
            capacity, rule="formula: 'min(max_dgram_qlen + 1, ceil(dgram.sndbuf_default / "
                           "dgram.truesize_small))'", note="max_dgram_qlen + 1 until sndbuf limits"),
        "dgram.truncation.rest_discarded": record(True),
        "dgram.sndbuf_default": record(212992, rule="formula: 'wmem_default'"),
        "dgram.truesize_small": record(768, rule="range: [256, 4096]"),
    }
    observations.update(changes)
    return make(observations, platform=platform)


OUR_TAGS = re.compile(r"</?(br|sub|sup|details|summary)>")


def live_markup(line):
    """Characters of a Markdown line that CommonMark would treat as markup: not backslash-
    escaped and not inside a code span (the tags we write ourselves left out)."""
    line, found, i = OUR_TAGS.sub("", re.sub(r"^#+ ", "", line)), [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and not line[i + 1].isalnum():
            i += 2
        elif line[i] == "`":
            fence = re.match("`+", line[i:]).group()
            close = re.compile(f"(?<!`){fence}(?!`)").search(line, i + len(fence))
            if close is None:
                found.append("`")
                i += len(fence)
            else:
                i = close.end()
        else:
            if line[i] in "<&`[]*_#":
                found.append(line[i])
            i += 1
    return found
