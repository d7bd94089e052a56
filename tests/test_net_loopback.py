"""The net probe: loopback only, no waits that expire, and the decisions it draws from counts."""
import ipaddress
import json
import os
import sys

import pytest

from ipcmatrix import catalogue, runner
from ipcmatrix.probes import harness, net
from probe_runs import values_of

FAMILY = "net"
DEADLINE = 20
LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}

# Record every address a socket is bound, connected or sent to, then run the family.
RECORDER = """
import json, socket
import ipcmatrix.probes.net as family
from ipcmatrix.probes import harness
seen = []
def recording(name):
    original = getattr(socket.socket, name)
    def call(self, *args):
        seen.append([name, list(args[-1]) if isinstance(args[-1], tuple) else repr(args[-1])])
        return original(self, *args)
    setattr(socket.socket, name, call)
for name in ("bind", "connect", "connect_ex", "sendto"):
    recording(name)
try:
    harness.main(family)
finally:
    with open("{out}", "w") as out:
        json.dump(seen, out)
"""


def test_every_address_the_probe_uses_is_loopback(tmp_path):
    out = tmp_path / "addresses.json"
    run = runner.run(FAMILY, DEADLINE, command=[sys.executable, "-I", "-c",
                                                RECORDER.replace("{out}", str(out))])
    values = values_of(run)
    assert set(values) == {o.key for o in catalogue.observations_of(FAMILY)}
    seen = json.loads(out.read_text())
    calls = {name for name, _ in seen}
    assert {"bind", "connect", "sendto"} <= calls, "the recorder saw too little to prove anything"
    for name, address in seen:
        assert isinstance(address, list), f"{name} to a non-IP address {address}"
        assert ipaddress.ip_address(address[0]) in LOOPBACK, f"{name} to {address}"


def test_no_observation_waits_out_a_window():
    """With a 1 s block window, any expired bounded wait would push the family past 0.5 s."""
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, harness.ENV_BLOCK_WINDOW: "1.0"})
    values = values_of(run)
    assert values["net.udp.full.blocking_send"] == "ok"
    slowest = max(record["ms"] for record in run.observations.values())
    assert slowest < 500, run.observations


def test_without_msg_trunc_the_flags_are_unsupported_and_truncation_still_measured():
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, harness.ENV_HIDE: "socket.MSG_TRUNC",
                                            harness.ENV_ONLY: "net.udp.truncation.received,"
                                            "net.udp.truncation.msg_trunc_flag,"
                                            "net.udp.truncation.recv_with_msg_trunc"})
    assert values_of(run) == {"net.udp.truncation.received": "ABC",
                              "net.udp.truncation.msg_trunc_flag": "unsupported",
                              "net.udp.truncation.recv_with_msg_trunc": "unsupported"}


def test_lossy_and_chopped_details_support_their_values():
    values = values_of(run := runner.run(FAMILY, DEADLINE))
    lossy = run.observations["net.udp.full.lossy"]["detail"]
    assert values["net.udp.full.lossy"] is (lossy["received"] < lossy["sent"])
    chopped = run.observations["net.tcp.chopped"]["detail"]
    assert values["net.tcp.chopped"] is (chopped["first_read"] < chopped["message"])
    assert run.observations["net.tcp.boundaries_preserved"]["detail"] == {"first_read": "ABCDEF"}


# --- the decision drawn from a flood, on made-up floods --------------------------------------

def flood(outcomes, received):
    return {"outcomes": outcomes, "attempted": len(outcomes), "sent": outcomes.count("ok"),
            "received": received, "rcvbuf": 8192, "slowest_send_ms": 0.1}


@pytest.mark.parametrize("outcomes, received, expected", [
    (["ok"] * 10, 4, "ok"),
    (["ok"] * 4 + ["ok", "blocks", "ok"], 4, "blocks"),
    (["ok"] * 4 + ["ENOBUFS"] + ["ok"] * 3, 4, "ENOBUFS"),
    (["blocks"] + ["ok"] * 9, 4, "ok"),  # a wait before the receiver was full is not this key
])
def test_blocking_send_is_judged_on_the_sends_into_the_full_receiver(monkeypatch, outcomes,
                                                                     received, expected):
    monkeypatch.setattr(net, "udp_flood", lambda: flood(outcomes, received))
    measured = net.udp_full_blocking_send()
    assert measured.value == expected
    assert measured.detail["sends_into_full_receiver"] == len(outcomes) - received


def test_a_receiver_that_never_filled_is_unmeasurable_not_ok(monkeypatch):
    monkeypatch.setattr(net, "udp_flood", lambda: flood(["ok"] * 10, 10))
    with pytest.raises(harness.Unmeasurable, match="never filled"):
        net.udp_full_blocking_send()
