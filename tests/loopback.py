"""A real SSH host on this machine's loopback addresses, for ``ray up`` with Ray's ``local``
provider: an sshd bound to 127.0.0.2 and 127.0.0.3 only (port 22, which Ray's launcher
cannot change), a throwaway host key and user key, and a dedicated user whose home is a
temporary folder, so nothing touches the tester's home, /tmp/ray or Ray clusters of others.

The user's environment is what loopback needs and nothing more:

- ``~/edge_tune_venv`` exists already (cluster.yaml's setup keeps an existing one): the
  packages of the Python running the tests, hard-linked (read-only to the user: its
  ``pip`` cannot change them) without edge_tune itself, which the setup installs from the
  rsynced repository as on any node. Tests have no network: ``pip.conf`` says no index and
  no build isolation (the build backend is among the linked packages).
- ``RAY_TMPDIR`` in its home: both nodes share this machine's /tmp, where the tester's own
  Ray and ``ray_current_cluster`` may be.

Everything is undone on exit: the user's processes (by its uid: only this test's), sshd (by
its handle), the user, its home and Ray's SSH control sockets for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil
import pytest

ADDRESSES = ("127.0.0.2", "127.0.0.3")  # the head and the edge worker
PACKAGES = {"sshd": "openssh-server", "rsync": "rsync"}


def _tool(name: str) -> str | None:
    """``name`` on PATH or in /usr/sbin (sshd), else None."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def require_tools() -> dict[str, str]:
    """sshd and rsync, installed with apt-get when missing; a skip only where neither they
    nor apt-get exist."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it adds a user and runs an sshd on port 22")
    missing = [PACKAGES[t] for t in PACKAGES if _tool(t) is None]
    if missing and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["update", "-qq"], ["install", "-y", "-qq", *missing]):
            with contextlib.suppress(subprocess.TimeoutExpired):  # then: the skip below
                subprocess.run(["apt-get", *step], check=False, env=env, timeout=600,
                               capture_output=True)
    found = {t: _tool(t) for t in PACKAGES}
    if None in found.values():
        pytest.skip(f"no {', '.join(PACKAGES[t] for t, p in found.items() if p is None)} and "
                    "no apt-get (as root) to install it: a real `ray up` needs an SSH server")
    return {t: str(p) for t, p in found.items()}


def _in_use(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((address, port)) == 0


def control_dir(user: str, cluster: str | None = None) -> Path:
    """Where Ray's launcher keeps its SSH control sockets for ``user`` (and ``cluster``)."""
    folder = Path("/tmp") / f"ray_ssh_{hashlib.sha256(user.encode()).hexdigest()[:10]}"
    return folder / hashlib.sha256(cluster.encode()).hexdigest()[:10] if cluster else folder


class LoopbackHost:
    """The SSH host of a loopback cluster (a context manager)."""

    def __init__(self, sshd: str) -> None:
        self.sshd_path = sshd
        self.user = f"etssh{os.getpid() % 100000}{os.urandom(2).hex()}"
        # under /tmp, short: the user must reach it (TMPDIR may be private) and Ray's socket
        # paths below $HOME/rt must stay under 107 characters
        self.root = Path(tempfile.mkdtemp(prefix="ets-", dir="/tmp"))
        self.home = self.root / "home"
        self.key = self.root / "id_ed25519"
        self.sshd: subprocess.Popen | None = None
        self.uid = -1
        self.made_run_sshd = False

    def __enter__(self) -> LoopbackHost:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        busy = [a for a in ADDRESSES if _in_use(a, 22)]
        if busy:  # an sshd of this machine answers there: not ours to configure
            pytest.skip(f"port 22 on {', '.join(busy)} is taken by another SSH server")
        os.chmod(self.root, 0o755)  # the user reaches its home through it
        subprocess.run(["useradd", "--home-dir", str(self.home), "--create-home",
                        "--shell", "/bin/bash", "--password", "*", self.user], check=True,
                       capture_output=True)
        entry = pwd.getpwnam(self.user)
        self.uid = entry.pw_uid
        for key in (self.key, self.root / "host_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        self._environment(entry)
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            *(f"ListenAddress {a}:22" for a in ADDRESSES),
            f"HostKey {self.root / 'host_ed25519'}", f"PidFile {self.root / 'sshd.pid'}",
            f"AllowUsers {self.user}", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "UsePAM no",
            "PermitRootLogin no", "StrictModes no", "MaxStartups 100", "MaxSessions 100",
            "X11Forwarding no", ""]))
        if not Path("/run/sshd").is_dir():  # sshd's privilege separation folder
            Path("/run/sshd").mkdir(mode=0o755)
            self.made_run_sshd = True
        with open(self.root / "sshd.log", "w") as log:  # its own session: one group to end
            self.sshd = subprocess.Popen([self.sshd_path, "-D", "-e", "-f", str(config)],
                                         stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while not all(_in_use(a, 22) for a in ADDRESSES):
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sshd did not start: "
                                   + (self.root / "sshd.log").read_text()[-2000:])
            time.sleep(0.2)

    def _environment(self, entry: pwd.struct_passwd) -> None:
        """The user's ~/.ssh, ~/.bashrc (RAY_TMPDIR), pip.conf and ~/edge_tune_venv."""
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        with open(self.home / ".bashrc", "a") as bashrc:
            bashrc.write("export RAY_TMPDIR=$HOME/rt  # this machine's /tmp/ray is not ours\n")
        (self.home / "rt").mkdir()
        pip = self.home / ".config" / "pip"
        pip.mkdir(parents=True)
        # pip's inverted flag: "no-build-isolation = false" turns build isolation off
        (pip / "pip.conf").write_text("[global]\nno-index = true\nno-build-isolation = false\n")
        venv = self.home / "edge_tune_venv"
        subprocess.run([self._python(), "-m", "venv", "--without-pip", str(venv)], check=True)
        for path in [self.home, *self.home.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        site = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
        ours = Path(sysconfig.get_path("purelib"))
        if os.stat(ours).st_dev != os.stat(site).st_dev:
            pytest.skip(f"{ours} and /tmp are on different file systems: the user's venv "
                        "cannot hard-link this environment (a copy is gigabytes)")
        for item in ours.iterdir():  # hard links: root's files, which the user cannot change
            if item.name.startswith(("edge_tune", "__editable__", "__pycache__")) \
                    or (site / item.name).exists():
                continue
            subprocess.run(["cp", "-al", str(item), str(site / item.name)], check=True)
        bin_dir = Path(sys.prefix) / "bin"
        shebang = f"#!{bin_dir / 'python'}"
        for script in bin_dir.iterdir():
            target = venv / "bin" / script.name
            if target.exists() or not script.is_file():
                continue
            with contextlib.suppress(UnicodeDecodeError):
                text = script.read_text()
                if text.startswith(shebang):  # console scripts: ray, pip, ...
                    target.write_text(f"#!{venv / 'bin' / 'python'}" + text[len(shebang):])
                    target.chmod(0o755)
                    os.chown(target, entry.pw_uid, entry.pw_gid)

    def _python(self) -> str:
        """An interpreter of this Python's version that the user may run (ours may live in
        root's home: pyenv)."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        for python in (getattr(sys, "_base_executable", sys.executable),
                       f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
            if Path(python).is_file() and subprocess.run(
                    ["runuser", "-u", self.user, "--", python, "-c", "pass"],
                    capture_output=True, check=False).returncode == 0:
                return python
        pytest.skip(f"no Python {version} that the user {self.user} may run (ours is "
                    f"{sys.executable}): apt-get install python{version}")

    def processes(self) -> list[psutil.Process]:
        """The processes of the dedicated user (this test's only)."""
        out = []
        for proc in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["uids"] and proc.info["uids"].real == self.uid:
                    out.append(proc)
        return out

    def __exit__(self, *exc: object) -> None:
        if self.uid >= 0:
            for proc in self.processes():
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)
            psutil.wait_procs(self.processes(), timeout=10)
        if self.sshd is not None:  # sshd and its per-connection children: its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sshd.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sshd.pid, signal.SIGKILL)
            self.sshd.wait()
        if self.made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
        with contextlib.suppress(KeyError):
            pwd.getpwnam(self.user)
            removed = subprocess.run(["userdel", "--force", self.user], check=False,
                                     capture_output=True, text=True)
            assert removed.returncode == 0, f"userdel {self.user}: {removed.stderr}"
        # Ray's SSH control sockets of the head's monitor (it runs as the user)
        shutil.rmtree(control_dir(self.user), ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
