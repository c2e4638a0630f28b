"""sshd_fixture.py - a throw-away OpenSSH server for integration tests.

Starts /usr/sbin/sshd on 127.0.0.1 on a free port with its own sshd_config,
an ed25519 host key and an ed25519 user key (both made by ssh-keygen in a
temporary directory), for the current user.  Python standard library only.

    with SshdFixture() as sshd:
        sshd.host, sshd.port, sshd.user, sshd.identity_file, sshd.known_hosts
        sshd.kill_session_processes()   # fault injection: drop connections

Running as root is supported (PermitRootLogin prohibit-password, and the
privilege separation directory /run/sshd is created if missing); as an
ordinary user sshd runs unprivileged and can only log that user in.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path, comment, keytype="ed25519"):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", keytype, "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def fingerprint(pubkey_path):
    """SHA256 fingerprint of a public key file, as ssh-keygen prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", pubkey_path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


class SshdFixture:
    """One sshd instance; see the module docstring."""

    def __init__(self, sftp_server="internal-sftp", log_level="VERBOSE",
                 host_key_types=("ed25519",), extra_config=()):
        """host_key_types: host keys to generate ("ed25519", "ecdsa", ...);
        known_hosts lists only the first.  sftp_server: "internal-sftp" or
        "sftp-server" (the external binary).  extra_config: more
        sshd_config lines (e.g. "SetEnv PATH=..." for a host whose logins
        see other programs)."""
        self.extra_config = tuple(extra_config)
        self.sftp_server = sftp_server
        self.host_key_types = tuple(host_key_types)
        self.host_keys = []
        self.log_level = log_level
        self.host = "127.0.0.1"
        self.port = None
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.dir = None
        self.identity_file = None
        self.known_hosts = None
        self.host_key = None
        self.log_file = None
        self.proc = None

    # -- lifecycle -------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="seerfs-sshd-")
        os.chmod(self.dir, 0o755)
        for t in self.host_key_types:
            path = os.path.join(self.dir, f"ssh_host_{t}_key")
            _keygen(path, "seerfs-test-host", t)
            self.host_keys.append(path)
        self.host_key = self.host_keys[0]
        self.identity_file = os.path.join(self.dir, "id_ed25519")
        _keygen(self.identity_file, "seerfs-test-user")
        authorized = os.path.join(self.dir, "authorized_keys")
        shutil.copyfile(self.identity_file + ".pub", authorized)
        os.chmod(authorized, 0o600)
        self.log_file = os.path.join(self.dir, "sshd.log")
        if os.getuid() == 0:
            # sshd refuses to start as root without its privsep directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

        last_err = None
        for _ in range(5):
            self.port = _free_port()
            self._write_config(authorized)
            self._write_known_hosts()
            try:
                self._launch()
                return self
            except RuntimeError as e:  # lost the port race; try another
                last_err = e
        self.stop()
        raise RuntimeError(f"sshd did not start: {last_err}")

    def _write_config(self, authorized):
        sftp = self.sftp_server if self.sftp_server == "internal-sftp" else SFTP_SERVER
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            *(f"HostKey {k}" for k in self.host_keys),
            f"PidFile {os.path.join(self.dir, 'sshd.pid')}",
            f"AuthorizedKeysFile {authorized}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password" if os.getuid() == 0 else "",
            f"Subsystem sftp {sftp}",
            "MaxSessions 64",
            "MaxStartups 100",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            f"LogLevel {self.log_level}",
            *self.extra_config,
        ]
        self.config = os.path.join(self.dir, "sshd_config")
        with open(self.config, "w") as f:
            f.write("\n".join(x for x in lines if x) + "\n")

    def known_hosts_line(self, host_key=None):
        """The known_hosts line for one of our host keys (default: first)."""
        with open((host_key or self.host_key) + ".pub") as f:
            keytype, key = f.read().split()[:2]
        return f"[{self.host}]:{self.port} {keytype} {key}\n"

    def _write_known_hosts(self):
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write(self.known_hosts_line())

    def _launch(self):
        check = subprocess.run(
            [SSHD, "-t", "-f", self.config], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected the config: {check.stderr}")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", self.config, "-E", self.log_file],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"sshd exited: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop_process()
        raise RuntimeError("sshd did not answer within 10 s")

    def stop_process(self):
        if self.proc is None:
            return
        self.kill_session_processes(signal.SIGCONT)
        self.kill_session_processes()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self):
        self.stop_process()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- fault injection ---------------------------------------------------
    def session_pids(self):
        """PIDs of every process below the listening sshd: the per-connection
        monitors and session processes (and what they run)."""
        if self.proc is None:
            return []
        parents = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # The command name may contain spaces; fields follow the last ')'.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.proc.pid]
        while todo:
            for child in parents.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def kill_session_processes(self, sig=signal.SIGKILL):
        """Signal the per-connection sshd processes (not the listener).
        SIGKILL drops every connection at once; SIGSTOP freezes them so the
        TCP link stays up but nothing answers."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    # -- helpers -----------------------------------------------------------
    def log_tail(self, n=4000):
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def ssh_options(self):
        """Options for OpenSSH's own clients (ssh, scp, sftp)."""
        return [
            "-i", self.identity_file,
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-F", "/dev/null",
        ]


def transfers_across_link_kill(sshd, read_path, write_path):
    """Reads read_path and writes 4 GiB to write_path in two threads, kills
    sshd's session processes a second in, and returns the errno each ended
    with (0: finished) and the seconds they took after the kill; a transfer
    still running 30 s after it counts as hung (None)."""
    import threading
    results = {"read": None, "write": None}

    def reader():
        try:
            with open(read_path, "rb") as f:
                while f.read(1 << 20):
                    pass
            results["read"] = 0
        except OSError as e:
            results["read"] = e.errno

    def writer():
        buf = b"w" * (1 << 20)
        try:
            with open(write_path, "wb") as f:
                for _ in range(4096):
                    f.write(buf)
            results["write"] = 0
        except OSError as e:
            results["write"] = e.errno

    ths = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for t in ths:
        t.start()
    time.sleep(1.0)
    killed = time.monotonic()
    assert sshd.kill_session_processes(), "no sshd session to kill"
    for t in ths:
        t.join(30)
    return results, time.monotonic() - killed


def serve_until_removed(envfile, **kw):
    """For the benchmarks (tests/bench/*.sh): starts an sshd, writes
    "HOST PORT USER IDENTITY KNOWN_HOSTS" to envfile, and serves until
    envfile is removed."""
    s = SshdFixture(log_level="ERROR", **kw)
    s.start()
    try:
        with open(envfile + ".tmp", "w") as f:
            f.write(f"{s.host} {s.port} {s.user} {s.identity_file} {s.known_hosts}\n")
        os.rename(envfile + ".tmp", envfile)
        while os.path.exists(envfile):
            time.sleep(0.2)
    finally:
        s.stop()


if __name__ == "__main__":
    # sshd_fixture.py: start a server and print how to reach it (manual use);
    # sshd_fixture.py ENVFILE [--sftp-server sftp-server] [--config LINE]...:
    # the benchmarks' form (serve_until_removed).
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("envfile", nargs="?")
    ap.add_argument("--sftp-server", default="internal-sftp")
    ap.add_argument("--config", action="append", default=[])
    a = ap.parse_args()
    if a.envfile:
        serve_until_removed(a.envfile, sftp_server=a.sftp_server, extra_config=a.config)
    else:
        with SshdFixture(sftp_server=a.sftp_server, extra_config=a.config) as s:
            print(f"host={s.host} port={s.port} user={s.user}")
            print(f"identity_file={s.identity_file} known_hosts={s.known_hosts}")
            print("Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
