#!/usr/bin/python3
# 90-faults.py: the short form of the fault-injection suite (test/faults/,
# docs/faults.md), run by `make test`: the real ems-dbwriter, ems-gateway
# (TLS) and two simulated ems-edge devices on loopback with a private
# PostgreSQL; each fault (kill -9 of gateway, DB writer and edge, PostgreSQL
# stopped -m immediate, the network cut, the gateway restarted during
# backfill, a locked and a stopped database) for a few seconds; per
# scenario: 0 lost, 0 duplicated, the gap backfilled at 1 s resolution, the
# live view current. `make test-faults` runs the full form (60 s outages and
# a one-hour outage).
import importlib.util
import os
import sys

_spec = importlib.util.spec_from_file_location(
    "faults", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../faults/faults.py"))
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)

sys.exit(faults.main(["--short", "--tap"]))
