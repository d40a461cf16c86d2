# test/lib/tap.sh: TAP lines for the shell suites, exactly as test/run.sh
# counts them. Source it (". "$ROOT/test/lib/tap.sh""), then:
#
#   ok NAME              "ok - NAME"
#   notok NAME [WHY]     "not ok - NAME: WHY" (or "not ok - NAME"); counts in $fails
#   skip NAME WHY        "ok - NAME # SKIP WHY": did not run, never counted as passed
#   note TEXT            "# TEXT", one line per line of TEXT
#   tap_status           true (status 0) only if no notok was printed: the
#                        suite's last command, so its exit status says it
#
# The Python suites print the same lines through test/lib/emstest.py.
# shellcheck shell=bash
fails=0
ok() { echo "ok - $1"; }
notok() {
    if [ $# -ge 2 ]; then echo "not ok - $1: $2"; else echo "not ok - $1"; fi
    fails=$((fails + 1))
}
skip() { echo "ok - $1 # SKIP $2"; }
note() { printf '%s\n' "$1" | sed 's/^/# /'; }
tap_status() { [ "$fails" -eq 0 ]; }
