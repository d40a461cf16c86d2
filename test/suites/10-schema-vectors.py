#!/usr/bin/python3
"""10-schema-vectors: the JSON schemas and the C decoders agree on every vector.

For each test/vectors/<kind>/{valid,invalid}/*.json:
  - proto-schemas/<kind>.schema.json (Draft 2020-12, python jsonschema) gives
    the expected verdict;
  - `$EMS_BUILD/emsctl validate --kind <kind>` gives the expected verdict and,
    for an invalid vector, names the path listed in invalid/expect.tsv; the
    schema's errors must include that path too.
Vectors flagged "c-only" in expect.tsv break a rule JSON Schema cannot state
(e.g. ack ranges in order): the schema must accept them and C must refuse
them, so every gap between the two is listed, not hidden.

Also: valid vectors pass emsctl without --kind (classification); random
messages from `emsctl _random` (the C encoders) are valid by the schemas;
the JSON examples in docs/protocol.md are valid by both.

Both sides parse JSON the same strict way (RFC 8259 plus jansson's limits):
duplicate keys, NaN/Infinity, numbers that overflow a double, lone
surrogates and nesting deeper than 2048 are refused before any schema runs.
Prints TAP lines; exits 1 if any check failed.
"""
import glob
import json
import math
import os
import re
import subprocess
import sys

from jsonschema import Draft202012Validator, RefResolver

ROOT = os.environ.get("EMS_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("EMS_BUILD") or os.path.join(ROOT, "build", "san")
EMSCTL = os.path.join(BUILD, "emsctl")
SCHEMAS = os.path.join(ROOT, "proto-schemas")
VECTORS = os.path.join(ROOT, "test", "vectors")
MAX_DEPTH = 2048  # jansson's JSON_PARSER_MAX_DEPTH
RANDOM_KINDS = ["telemetry", "command", "command-result", "ack", "nack", "welcome", "telemetry-batch",
                "device-info"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import emstest  # noqa: E402  (test/lib/emstest.py)

TAP = emstest.Tap()


def tap(ok, name, why=""):
    TAP.ok(name, ok, why)


# ------------------------------------------------------------------ strict JSON

class BadJSON(Exception):
    pass


def _pairs(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise BadJSON(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _constant(name):
    raise BadJSON(f"{name} is not JSON")


def _float(text):
    v = float(text)
    if not math.isfinite(v):
        raise BadJSON(f"{text} overflows a double")
    return v


def _int(text):
    if not math.isfinite(float(text)):
        raise BadJSON(f"{text} overflows a double")
    return int(text)


def _check_tree(value):
    """Depth limit and no lone surrogates, iteratively (no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise BadJSON("nesting too deep")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, item in items:
                if isinstance(k, str):
                    k.encode("utf-8")
                stack.append((item, depth + 1))
        elif isinstance(v, str):
            v.encode("utf-8")  # raises on a lone surrogate


def strict_loads(raw):
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant,
                           parse_float=_float, parse_int=_int)
        _check_tree(value)
        return value
    except (ValueError, RecursionError, UnicodeError, BadJSON) as e:
        raise BadJSON(str(e)[:100]) from None


# ------------------------------------------------------------------ schemas

def load_validators():
    store, by_name = {}, {}
    for path in glob.glob(os.path.join(SCHEMAS, "*.schema.json")):
        with open(path) as f:
            schema = json.load(f)
        Draft202012Validator.check_schema(schema)
        store[schema["$id"]] = schema
        by_name[os.path.basename(path)[: -len(".schema.json")]] = schema
    validators = {}
    for name, schema in by_name.items():
        resolver = RefResolver(base_uri=schema["$id"], referrer=schema, store=store)
        validators[name] = Draft202012Validator(schema, resolver=resolver)
    return validators


def fmt_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def error_paths(errors):
    """Every path an error (or its context) names; a missing required member
    is named by its own path, as the C decoders name it."""
    paths, todo = set(), list(errors)
    while todo:
        e = todo.pop()
        base = list(e.absolute_path)
        if e.validator == "required" and isinstance(e.instance, dict):
            for name in e.validator_value:
                if name not in e.instance:
                    paths.add(fmt_path(base + [name]))
        elif e.validator == "dependentRequired" and isinstance(e.instance, dict):
            # {"timestamp": ["state", ...]}: each missing member of a present key
            for key, names in e.validator_value.items():
                if key in e.instance:
                    for name in names:
                        if name not in e.instance:
                            paths.add(fmt_path(base + [name]))
        else:
            paths.add(fmt_path(base))
        todo.extend(e.context or [])
    return paths


def schema_check(validator, raw):
    """(valid, set of error paths, first message)."""
    try:
        value = strict_loads(raw)
    except BadJSON as e:
        return False, {""}, f"invalid JSON: {e}"
    errors = list(validator.iter_errors(value))
    if not errors:
        return True, set(), ""
    return False, error_paths(errors), errors[0].message[:120]


# ------------------------------------------------------------------ emsctl

LINE_PATH = re.compile(r"^([A-Za-z0-9_.\[\]]+): (.*)$", re.S)


def emsctl_check(kind, files):
    """Runs emsctl once for many files: ({file: (valid, path, text)}, exit status)."""
    args = [EMSCTL, "validate"] + (["--kind", kind] if kind else []) + files
    proc = subprocess.run(args, capture_output=True, timeout=300)
    out = proc.stdout.decode("utf-8", "replace").splitlines()
    results = {}
    for f, line in zip(files, out):
        if not line.startswith(f + ": "):
            results[f] = (None, None, f"unexpected line {line[:100]!r}")
            continue
        rest = line[len(f) + 2:]
        if rest == "ok":
            results[f] = (True, None, rest)
        else:
            m = LINE_PATH.match(rest)
            results[f] = (False, m.group(1) if m else "", rest)
    for f in files[len(out):]:
        results[f] = (None, None, "no output line (crash?) " + proc.stderr.decode("utf-8", "replace")[-300:])
    return results, proc.returncode


def read_expect(kind_dir):
    expect = {}
    path = os.path.join(kind_dir, "invalid", "expect.tsv")
    if not os.path.exists(path):
        return expect
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            expect[parts[0]] = (parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
    return expect


def check_valid(kind, validator, files):
    results, rc = emsctl_check(kind, files)
    for f in files:
        name = os.path.relpath(f, ROOT)
        s_ok, _, s_why = schema_check(validator, open(f, "rb").read())
        c_ok, _, c_text = results[f]
        if not s_ok:
            tap(False, name, f"schema refuses a valid vector: {s_why}")
        elif c_ok is not True:
            tap(False, name, f"emsctl refuses a valid vector: {c_text}")
        else:
            tap(True, name)
    if files:
        tap(rc == 0, f"emsctl exit status 0 for {kind}/valid", f"got {rc}")
        results, rc = emsctl_check(None, files)
        bad = [f"{os.path.basename(f)}: {t}" for f, (ok, _, t) in results.items() if ok is not True]
        tap(not bad and rc == 0, f"{kind}/valid classified without --kind", "; ".join(bad)[:300])


def check_invalid(kind, validator, files, expect):
    results, rc = emsctl_check(kind, files)
    for f in files:
        base, name = os.path.basename(f), os.path.relpath(f, ROOT)
        if base not in expect:
            tap(False, name, "not listed in expect.tsv")
            continue
        want, flag = expect[base]
        s_ok, s_paths, s_why = schema_check(validator, open(f, "rb").read())
        c_ok, c_path, c_text = results[f]
        if c_ok is not False:
            tap(False, name, f"emsctl: {c_text}")
        elif c_path != want:
            tap(False, name, f"emsctl names path {c_path!r}, expected {want!r} ({c_text[:150]})")
        elif flag == "c-only":
            tap(s_ok, name, "flagged c-only but the schema refuses it too: drop the flag")
        elif s_ok:
            tap(False, name, "the schema accepts an invalid vector")
        elif want not in s_paths:
            tap(False, name, f"schema errors name {sorted(s_paths)}, not {want!r} ({s_why})")
        else:
            tap(True, name)
    for base in sorted(set(expect) - {os.path.basename(f) for f in files}):
        tap(False, f"{kind}/invalid/{base}", "listed in expect.tsv but missing")
    if files:
        tap(rc == 1, f"emsctl exit status 1 for {kind}/invalid", f"got {rc}")


def check_random(validators, count=300):
    for kind in RANDOM_KINDS:
        proc = subprocess.run([EMSCTL, "_random", kind, "20260131", str(count)], capture_output=True, timeout=300)
        lines = proc.stdout.splitlines()
        bad = []
        for i, raw in enumerate(lines):
            ok, _, why = schema_check(validators[kind], raw)
            if not ok:
                bad.append(f"line {i + 1}: {why}: {raw[:200]!r}")
        tap(proc.returncode == 0 and len(lines) == count and not bad,
            f"{count} random {kind} messages from the C encoder are valid by the schema",
            f"rc {proc.returncode}, {len(lines)} lines; " + "; ".join(bad[:3]))


def classify(value):
    """The classification rules of common/message.h, in python."""
    types = {"command_result": "command-result", "ack": "ack", "nack": "nack", "welcome": "welcome",
             "telemetry_batch": "telemetry-batch", "subscribe": "dashboard-subscribe",
             "unsubscribe": "dashboard-subscribe", "telemetry": "dashboard-telemetry",
             "device": "dashboard-device", "error": "dashboard-error", "device_info": "device-info",
             "fleet": "dashboard-fleet"}
    if not isinstance(value, dict):
        return None
    if "type" in value:
        return types.get(value["type"]) if isinstance(value["type"], str) else None
    return "telemetry" if "device_id" in value else "command" if "action" in value else None


def check_protocol_examples(validators, tmpdir):
    """The JSON examples of sections 1-4 of docs/protocol.md (the wire
    messages); those with "..." placeholders are skipped."""
    with open(os.path.join(ROOT, "docs", "protocol.md")) as f:
        text = f.read()
    text = text.split("\n## 5.")[0]
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    examples, skipped = [], 0
    for block in blocks:
        for text in [block] + block.splitlines():
            try:
                examples.append(strict_loads(text.encode()))
                break
            except BadJSON:
                continue
        else:
            skipped += 1
        if text is not block:  # a block of one message per line: take every line
            for line in block.splitlines()[block.splitlines().index(text) + 1:]:
                try:
                    examples.append(strict_loads(line.encode()))
                except BadJSON:
                    skipped += 1 if line.strip() else 0
    print(f"# docs/protocol.md: {len(examples)} examples, {skipped} skipped (placeholders)")
    for i, value in enumerate(examples):
        kind = classify(value)
        path = os.path.join(tmpdir, f"protocol-example-{i}.json")
        with open(path, "w") as f:
            json.dump(value, f)
        if kind is None:
            tap(False, f"docs/protocol.md example {i}", "cannot classify")
            continue
        s_ok, _, s_why = schema_check(validators[kind], json.dumps(value).encode())
        results, _ = emsctl_check(None, [path])
        c_ok, _, c_text = results[path]
        tap(s_ok and c_ok, f"docs/protocol.md example {i} ({kind}) is valid", f"schema: {s_why}; emsctl: {c_text}")


def main():
    if not os.access(EMSCTL, os.X_OK):
        tap(False, "emsctl exists", f"{EMSCTL} is missing: build it first (make BUILD=... all)")
        return 1
    validators = load_validators()
    tap(True, f"{len(validators)} schemas are valid Draft 2020-12")
    for kind_dir in sorted(glob.glob(os.path.join(VECTORS, "*", ""))):
        kind = os.path.basename(os.path.dirname(kind_dir))
        if kind not in validators:
            tap(False, f"vectors/{kind}", "no proto-schemas/{kind}.schema.json")
            continue
        valid = sorted(glob.glob(os.path.join(kind_dir, "valid", "*.json")))
        invalid = sorted(glob.glob(os.path.join(kind_dir, "invalid", "*.json")))
        check_valid(kind, validators[kind], valid)
        check_invalid(kind, validators[kind], invalid, read_expect(kind_dir))
    check_random(validators)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="ems-vectors-") as tmp:
        check_protocol_examples(validators, tmp)
    return TAP.status()


if __name__ == "__main__":
    sys.exit(main())
