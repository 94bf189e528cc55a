"""A throw-away MIT Kerberos realm for the tests: its own database, config and KDC process.

Everything lives in one temporary folder: `kdc.conf` (`KRB5_KDC_PROFILE`), `krb5.conf`
(`KRB5_CONFIG`), the database, keytabs and ticket caches. `krb5kdc -n` runs in the
foreground on a loopback TCP port; `kadmin.local` works on the database directly, so no
admin server is needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REALM = "PIDELTA.TEST"
MASTER_PASSWORD = "master-key-of-the-test-realm"
KDC = "/usr/sbin/krb5kdc"
KADMIN = "/usr/sbin/kadmin.local"
KDB5_UTIL = "/usr/sbin/kdb5_util"
KINIT = "/usr/bin/kinit"
# Tickets are checked against the clock with this much slack (seconds); small, so that an
# expired ticket is refused soon after its end instead of five minutes later.
CLOCK_SKEW = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> bool:
    return all(os.access(p, os.X_OK) for p in (KDC, KADMIN, KDB5_UTIL, KINIT))


@dataclass
class Realm:
    """The realm's folder and its running KDCs (the main one, and any started later)."""

    root: Path
    port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def kdc_conf(self) -> Path:
        return self.root / "kdc.conf"

    @property
    def krb5_conf(self) -> Path:
        return self.root / "krb5.conf"

    def env(self, krb5_conf: Path | None = None) -> dict[str, str]:
        """Environment for a process of the realm: its config, no ticket cache of the host."""
        return {
            "KRB5_CONFIG": str(krb5_conf or self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5CCNAME": f"FILE:{self.root / 'no-such-cache'}",
            "KRB5_CLIENT_KTNAME": str(self.root / "no-such-client.keytab"),
            "KRB5_KTNAME": str(self.root / "no-such.keytab"),
        }

    def kadmin(self, query: str) -> str:
        out = subprocess.run(
            [KADMIN, "-r", REALM, "-q", query],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        if "error" in out.stderr.lower() or "error" in out.stdout.lower():
            raise RuntimeError(f"kadmin.local {query!r}: {out.stdout} {out.stderr}")
        return out.stdout

    def add_user(self, name: str, password: str, maxlife: str = "10 hours") -> str:
        self.kadmin(f'addprinc -pw {password} -maxlife "{maxlife}" +requires_preauth {name}')
        return f"{name}@{REALM}"

    def add_keytab(self, name: str, maxlife: str = "10 hours") -> tuple[str, Path]:
        """A principal with a random key, exported to `<root>/<name>.keytab`."""
        self.kadmin(f'addprinc -randkey -maxlife "{maxlife}" +requires_preauth {name}')
        return f"{name}@{REALM}", self.export(name)

    def export(self, name: str, path: Path | None = None) -> Path:
        """Write the principal's keys to a keytab, replacing any file there (a new key)."""
        path = path or self.root / f"{name.replace('/', '_')}.keytab"
        tmp = path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        self.kadmin(f"ktadd -k {tmp} {name}")
        tmp.replace(path)  # atomic, as a Secret update or a rotation script does it
        return path

    def kinit(self, principal: str, password: str, cache: Path, lifetime: str = "1h") -> None:
        subprocess.run(
            [KINIT, "-l", lifetime, "-c", f"FILE:{cache}", principal],
            input=password + "\n",
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def write_krb5_conf(self, path: Path, port: int) -> Path:
        """A client config whose KDC is 127.0.0.1:`port`; no DNS, TCP only."""
        path.write_text(
            f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    kdc_timesync = false
    forwardable = true
    clockskew = {CLOCK_SKEW}
    ignore_acceptor_hostname = false
    default_ccache_name = FILE:{self.root / "no-such-cache"}

[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{port}
    }}

[domain_realm]
    127.0.0.1 = {REALM}
    localhost = {REALM}
    .test = {REALM}
"""
        )
        return path

    def start_kdc(self, port: int, offset_seconds: int = 0) -> subprocess.Popen[bytes]:
        """`krb5kdc -n` on `port` (a clock `offset_seconds` off, for the skew case)."""
        profile = self.write_kdc_conf(self.root / f"kdc-{port}.conf", port)
        args = [KDC, "-n", "-r", REALM]
        if offset_seconds:
            args += ["-T", str(offset_seconds)]
        proc = subprocess.Popen(
            args,
            env={**os.environ, **self.env(), "KRB5_KDC_PROFILE": str(profile)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"krb5kdc exited with {proc.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return proc
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("krb5kdc did not listen within 30 s")

    def write_kdc_conf(self, path: Path, port: int) -> Path:
        root = self.root
        path.write_text(
            f"""[kdcdefaults]
    kdc_ports = {port}
    kdc_tcp_ports = {port}

[realms]
    {REALM} = {{
        database_name = {root / "principal"}
        key_stash_file = {root / "stash"}
        acl_file = {root / "kadm5.acl"}
        max_life = 10h 0m 0s
        max_renewable_life = 1d 0h 0m 0s
    }}

[logging]
    kdc = FILE:{root / "kdc.log"}
"""
        )
        return path

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def create(root: Path) -> Realm:
    """Create the realm's database and config under `root` and start its KDC."""
    port = free_port()
    realm = Realm(root, port)
    (root / "kadm5.acl").write_text("")
    realm.write_kdc_conf(realm.kdc_conf, port)
    realm.write_krb5_conf(realm.krb5_conf, port)
    subprocess.run(
        [KDB5_UTIL, "create", "-s", "-r", REALM, "-P", MASTER_PASSWORD],
        env={**os.environ, **realm.env()},
        capture_output=True,
        timeout=120,
        check=True,
    )
    realm.start_kdc(port)
    return realm
