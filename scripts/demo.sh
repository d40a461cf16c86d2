#!/usr/bin/env bash
# scripts/demo.sh: runs the whole system locally (make demo).
#
# The demo issue (#8) builds this up as the parts land. Until then this script
# checks which parts exist and says plainly what is missing instead of
# pretending to run something.
set -u
cd "$(dirname "$0")/.."
missing=()
for b in ems-gateway ems-dbwriter ems-edge emsctl; do
    [ -x "build/$b" ] || missing+=("build/$b")
done
[ -f build/dashboard/index.html ] || missing+=("build/dashboard (the dashboard)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "make demo: not all parts of the system exist yet; missing: ${missing[*]}"
    echo "make demo: see README.md and the open issues; nothing was started."
    exit 1
fi
echo "make demo: all parts are built, but the demo runner (issue #8) has not landed yet."
exit 1
