# emstest.py: what every Python test program here shares (the suites'
# libraries test/suites/40-dbwriter-lib.py, 50-gateway-lib.py and
# 60-edge-lib.py, and the fault runner test/faults/faults.py).
#
#   Tap        TAP lines exactly as test/run.sh counts them: "ok - name",
#              "not ok - name: why", "ok - name # SKIP why", notes "# ...".
#   Proc       a child process with its log file, in its own session.
#   wait_for   polls a condition until it holds or a deadline passes.
#   free_port  a TCP port the kernel just said is free.
#   iso_ms     Unix milliseconds as RFC 3339 UTC with milliseconds.
#
# Users put this folder on sys.path and `import emstest` (the path is
# found from their own file, so any working directory will do).
import os
import re
import signal
import socket
import subprocess
import sys
import time

LIB_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("EMS_ROOT") or os.path.dirname(os.path.dirname(LIB_DIR))


def note(msg):
    """Prints `msg` as TAP comment lines ("# ..."), one per line."""
    text = str(msg)
    if text.endswith("\n"):
        text = text[:-1]
    print("# " + text.replace("\n", "\n# "), flush=True)


class Tap:
    """Prints TAP lines; counts them for the exit status."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def ok(self, name, cond=True, why=""):
        """One case: passed if `cond` is true. Returns `cond`."""
        if cond:
            self.passed += 1
            print(f"ok - {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok - {name}: {why}", flush=True)
        return cond

    def eq(self, name, got, want):
        return self.ok(name, got == want, f"got {got!r}, want {want!r}")

    def skip(self, name, why):
        """A case that did not run (test/run.sh counts it as skipped)."""
        self.skipped += 1
        print(f"ok - {name} # SKIP {why}", flush=True)

    def note(self, msg):
        note(msg)

    def status(self):
        return 1 if self.failed else 0

    def done(self):
        sys.exit(self.status())


def wait_for(cond, timeout, step=0.05):
    """Polls cond() every `step` seconds until it returns something true or
    `timeout` seconds have passed; returns its last value (an exception
    counts as None). cond() runs at least once, and once more at the end."""
    end = time.monotonic() + timeout
    while True:
        try:
            v = cond()
        except Exception:
            v = None
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (for a server that cannot take 0)."""
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def iso_ms(ms):
    """ms since the Unix epoch -> RFC 3339 UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


class Proc:
    """A child process; its stdout and stderr are appended to one log file,
    across restarts. It runs in its own session (start_new_session), so a
    signal to the test's process group does not reach it, and test/run.sh
    still finds and names it by its EMS_TEST_RUN marker if it is left over.

    banner: each start writes "===== start N at HH:MM:SS: argv" to the log
    first, and text(since_start=True) reads what came after the last one."""

    def __init__(self, name, argv, log, env=None, start=True, banner=False):
        self.name, self.argv, self.log, self.env = name, list(argv), log, env
        self.banner = banner
        self.p = None
        self.starts = 0
        self.log_offset = 0
        if start:
            self.start()

    def start(self):
        with open(self.log, "ab") as f:
            if self.banner:
                f.write(f"\n===== start {self.starts + 1} at {time.strftime('%H:%M:%S')}: "
                        f"{' '.join(self.argv)}\n".encode())
                f.flush()
            self.log_offset = f.tell()
            self.p = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT,
                                      env=self.env, start_new_session=True)
        self.starts += 1
        return self

    @property
    def pid(self):
        return self.p.pid if self.p else None

    @property
    def returncode(self):
        return self.p.returncode if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def kill9(self):
        """SIGKILL, and waits for the exit."""
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
        if self.p is not None:
            self.p.wait()

    def wait(self, timeout=None):
        """The exit status, or None if still running after `timeout`."""
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends `sig` (SIGTERM), then SIGKILL after `timeout` seconds;
        returns the exit status, or None if it had to be killed."""
        if self.p is None:
            return None
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                return None
        return self.p.returncode

    def text(self, since_start=False):
        """The log (from the last start only if `since_start`)."""
        try:
            with open(self.log, "rb") as f:
                if since_start:
                    f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


# A line of a sanitizer report (ASan, LSan, UBSan) in a process log.
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:")


def sanitizer_lines(text):
    """The lines of `text` that belong to sanitizer reports."""
    return [l for l in text.splitlines() if SANITIZER_RE.search(l)]
