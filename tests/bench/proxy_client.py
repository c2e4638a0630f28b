"""proxy_client.py - one delay_proxy.py process, started and read the same
way by tests/bench/bench_remote.py and tests/integration/test_sftp_latency.py:
it listens on a port of its own choosing (self.port), forwards to
127.0.0.1:target_port with delay_ms each way, and counters() asks it for
its status (SIGUSR1, then the status file's next seq)."""

import json
import os
import signal
import subprocess
import sys
import time

PROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "delay_proxy.py")


class DelayProxy:
    def __init__(self, base, target_port, delay_ms, name="proxy"):
        self.status = os.path.join(base, f"{name}.json")
        portfile = os.path.join(base, f"{name}.port")
        self.proc = subprocess.Popen([sys.executable, PROXY, "0", "127.0.0.1", str(target_port), str(delay_ms),
                                      "--status", self.status, "--port-file", portfile], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(portfile):
            assert self.proc.poll() is None and time.monotonic() < deadline, "delay_proxy.py did not start"
            time.sleep(0.05)
        with open(portfile) as f:
            self.port = int(f.read())
        self.seq = 0

    def counters(self):
        """The proxy's status now (a fresh one: its seq moved on)."""
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(self.status) as f:
                    st = json.load(f)
                if st["seq"] > self.seq:
                    self.seq = st["seq"]
                    return st
            except (FileNotFoundError, ValueError, KeyError):
                pass
            time.sleep(0.002)
        raise RuntimeError("delay_proxy.py did not answer SIGUSR1")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
