#!/usr/bin/env python3
"""run_conformance.py - runs toml-decoder over the toml-test 1.0.0 suite.

Usage: run_conformance.py PATH/TO/toml-decoder

The suite is read from $MOAT_SHARED/testdata/toml-test/ (by default
../shared beside the source tree). Valid cases must decode to the tagged
JSON beside them; invalid cases must be refused with exit status 1 and a
"line:col: message" on stderr. A crash, a timeout or a sanitizer report
fails a case whatever its kind. Prints one line per failure and a final
"N passed, N failed" line; exits 77 (skip) if the suite is missing, or 1
when CI=true.

Values compare by meaning, not text: integers and floats by value (any
NaN equals any NaN, -0.0 equals 0.0), date-times as instants (offset) or
fields (local) down to the nanosecond, whatever the T/space separator, the
case of T and Z or the number of fraction digits; strings, bools and
types must match exactly.
"""

import calendar
import concurrent.futures
import json
import math
import os
import re
import subprocess
import sys

TIMEOUT = 20
SANITIZER_MARKS = (
    b"AddressSanitizer",
    b"LeakSanitizer",
    b"UndefinedBehaviorSanitizer",
    b"runtime error:",
)
ERROR_LINE = re.compile(rb"^\d+:\d+: \S")
DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
                  r"([Zz]|[+-]\d{2}:\d{2})?$")


def suite_dir():
    shared = os.environ.get("MOAT_SHARED")
    if not shared:
        here = os.path.dirname(os.path.abspath(__file__))
        shared = os.path.join(here, "..", "..", "..", "shared")
    return os.path.normpath(os.path.join(shared, "testdata", "toml-test"))


def find_cases(root):
    cases = []
    for kind in ("valid", "invalid"):
        top = os.path.join(root, kind)
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".toml"):
                    path = os.path.join(folder, name)
                    cases.append((kind, os.path.relpath(path, root)))
    cases.sort()
    return cases


def parse_datetime(kind, text):
    """Returns a comparable tuple for a datetime value, or None."""
    y = mo = d = h = mi = s = frac = off = None
    rest = text
    m = DATE.match(rest)
    if m:
        y, mo, d = m.groups()
        rest = rest[10:]
        if rest:
            if rest[0] not in "Tt ":
                return None
            rest = rest[1:]
    if rest:
        m = TIME.match(rest)
        if m is None:
            return None
        h, mi, s, frac, off = m.groups()
    has_date, has_time = y is not None, h is not None
    expect = {
        "datetime": (True, True, True),
        "datetime-local": (True, True, False),
        "date-local": (True, False, False),
        "time-local": (False, True, False),
    }[kind]
    if (has_date, has_time, off is not None) != expect:
        return None
    nanos = int((frac or "").ljust(9, "0")[:9] or "0")
    if kind == "date-local":
        return (int(y), int(mo), int(d))
    if kind == "time-local":
        return (int(h), int(mi), int(s), nanos)
    if kind == "datetime-local":
        return (int(y), int(mo), int(d), int(h), int(mi), int(s), nanos)
    # Offset date-times compare as instants: Z is +00:00.
    offset = 0
    if off not in ("Z", "z"):
        sign = -1 if off[0] == "-" else 1
        offset = sign * (int(off[1:3]) * 60 + int(off[4:6]))
    # Seconds are added apart so that a leap second (60) still counts.
    secs = (calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), 0))
            + int(s) - offset * 60)
    return (secs, nanos)


def parse_float(text):
    t = text.lower()
    if t in ("nan", "+nan", "-nan"):
        return math.nan
    if t in ("inf", "+inf"):
        return math.inf
    if t == "-inf":
        return -math.inf
    return float(t.replace("_", ""))


def is_scalar(obj):
    return (isinstance(obj, dict) and set(obj) == {"type", "value"}
            and isinstance(obj["type"], str) and isinstance(obj["value"], str))


def compare(want, got, path):
    """Returns None if equal, else a reason naming the path."""
    where = path or "(root)"
    if is_scalar(want):
        if not is_scalar(got):
            return "%s: want %s, got %s" % (where, want["type"],
                                            type_name(got))
        if want["type"] != got["type"]:
            return "%s: want type %s, got %s" % (where, want["type"],
                                                 got["type"])
        w, g, t = want["value"], got["value"], want["type"]
        if t == "float":
            try:
                wf, gf = parse_float(w), parse_float(g)
            except ValueError:
                return "%s: bad float %r / %r" % (where, w, g)
            if math.isnan(wf) or math.isnan(gf):
                same = math.isnan(wf) and math.isnan(gf)
            else:
                same = wf == gf
        elif t == "integer":
            try:
                same = int(w) == int(g)
            except ValueError:
                return "%s: bad integer %r / %r" % (where, w, g)
        elif t == "bool":
            same = w == g
        elif t in ("datetime", "datetime-local", "date-local",
                   "time-local"):
            wd, gd = parse_datetime(t, w), parse_datetime(t, g)
            same = wd is not None and wd == gd
        else:
            same = w == g
        if not same:
            return "%s: want %s %r, got %r" % (where, t, w, g)
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or is_scalar(got):
            return "%s: want table, got %s" % (where, type_name(got))
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        if missing:
            return "%s: missing key %r" % (where, missing[0])
        if extra:
            return "%s: unexpected key %r" % (where, extra[0])
        for k in sorted(want):
            r = compare(want[k], got[k], "%s.%s" % (path, k) if path else k)
            if r:
                return r
        return None
    if isinstance(want, list):
        if not isinstance(got, list):
            return "%s: want array, got %s" % (where, type_name(got))
        if len(want) != len(got):
            return "%s: want %d elements, got %d" % (where, len(want),
                                                     len(got))
        for i, (w, g) in enumerate(zip(want, got)):
            r = compare(w, g, "%s[%d]" % (path, i))
            if r:
                return r
        return None
    return "%s: unexpected JSON %r in expected output" % (where, want)


def type_name(obj):
    if is_scalar(obj):
        return obj["type"]
    if isinstance(obj, dict):
        return "table"
    if isinstance(obj, list):
        return "array"
    return type(obj).__name__


def first_line(data):
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "(no message)"


def run_case(decoder, root, kind, rel):
    """Returns None on success, else the reason the case failed."""
    with open(os.path.join(root, rel), "rb") as f:
        data = f.read()
    try:
        proc = subprocess.run([decoder], input=data, capture_output=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timed out after %ds" % TIMEOUT
    except OSError as e:
        return "cannot run decoder: %s" % e
    if proc.returncode < 0:
        return "killed by signal %d" % -proc.returncode
    if any(m in proc.stderr for m in SANITIZER_MARKS):
        return "sanitizer report: %s" % first_line(proc.stderr)

    if kind == "invalid":
        if proc.returncode == 0:
            return "accepted invalid input"
        if proc.returncode != 1:
            return "exit status %d" % proc.returncode
        if not ERROR_LINE.match(proc.stderr):
            return "error not in line:col: form: %s" % first_line(
                proc.stderr)
        return None

    if proc.returncode != 0:
        return "rejected (exit %d): %s" % (proc.returncode,
                                           first_line(proc.stderr))
    try:
        got = json.loads(proc.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return "decoder printed bad JSON: %s" % e
    with open(os.path.join(root, rel[:-len(".toml")] + ".json"), "rb") as f:
        want = json.loads(f.read().decode("utf-8"))
    return compare(want, got, "")


def main():
    if len(sys.argv) != 2:
        print("usage: %s PATH/TO/toml-decoder" % sys.argv[0],
              file=sys.stderr)
        return 2
    decoder = os.path.abspath(sys.argv[1])
    root = suite_dir()
    if not os.path.isdir(os.path.join(root, "valid")):
        print("toml-test suite not found at %s (set MOAT_SHARED)" % root)
        return 1 if os.environ.get("CI") == "true" else 77
    cases = find_cases(root)
    if not cases:
        print("no cases found under %s" % root)
        return 1

    # Results come back in case order, so the output is deterministic.
    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(
            lambda c: run_case(decoder, root, c[0], c[1]), cases))
    passed = failed = 0
    for (kind, rel), why in zip(cases, results):
        if why is None:
            passed += 1
        else:
            failed += 1
            print("FAIL %s: %s" % (rel[:-len(".toml")], why))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
