"""A guest's SSH host key, known before the guest first boots: no trust on first use.

libvm creates the guest, so it can choose the guest's host key: :func:`generate`
makes an ed25519 pair (``ssh-keygen``), the private half goes into the cloud-init
seed only (cloud-config ``ssh_keys``), the public half is kept with the VM (the
domain's ``<libvm:vm>`` metadata). :func:`probe` then asks a guest which key it
presents, with the real ``ssh`` client, and :class:`HostKeyMismatch` names both
fingerprints when it is another one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import HostKeyMismatch, HostKeyUnavailable, InvalidSpec

__all__ = ["ALIAS", "HostKey", "Probe", "check", "generate", "pinned_options", "probe"]

#: The name the pinned key is filed under (``HostKeyAlias``): the guest's address and port
#: do not matter, and an entry for that address in the user's ``known_hosts`` is never used.
ALIAS = "libvm-guest"

_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


@dataclass(frozen=True)
class HostKey:
    """An SSH public host key: ``type`` and ``blob`` (base64), as in ``known_hosts``."""

    type: str
    blob: str

    @classmethod
    def parse(cls, text: object, field: str = "host_key") -> HostKey:
        """``"ssh-ed25519 AAAA... [comment]"`` (one line of a ``.pub`` file; the comment is dropped)."""
        parts = text.split() if isinstance(text, str) and text.strip().isprintable() else []
        if len(parts) < 2 or parts[0] not in _KEY_TYPES:
            raise InvalidSpec(field, text, "an OpenSSH public key: 'ssh-ed25519 AAAA...'")
        try:
            raw = base64.b64decode(parts[1], validate=True)
        except binascii.Error:
            raise InvalidSpec(field, text, "the key's base64 part does not decode") from None
        # The blob starts with its own type name (RFC 4253 string): a key pasted under another type is refused.
        if raw[4:4 + len(parts[0])] != parts[0].encode() or int.from_bytes(raw[:4], "big") != len(parts[0]):
            raise InvalidSpec(field, text, f"the key data is not a {parts[0]} key")
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.type} {self.blob}"

    @property
    def fingerprint(self) -> str:
        """``SHA256:...``, as ``ssh-keygen -lf`` and ``ssh -v`` print it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def generate(comment: str = "libvm") -> tuple[str, HostKey]:
    """A new ed25519 host key pair: ``(private key in OpenSSH format, public key)``.

    ``ssh-keygen`` writes the pair into a private temporary directory (mode
    0700), which is removed at once: the private half lives on only in memory,
    for the seed. Raises :class:`HostKeyUnavailable` without ``ssh-keygen``.
    """
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise HostKeyUnavailable("ssh-keygen is missing (apt-get install openssh-client); "
                                 "or pass CloudInit(host_key=False)")
    with tempfile.TemporaryDirectory(prefix="libvm-hostkey-") as tmp:
        path = os.path.join(tmp, "key")
        proc = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise HostKeyUnavailable(f"ssh-keygen failed ({proc.returncode}): {proc.stderr.strip()}")
        with open(path, encoding="ascii") as private, open(path + ".pub", encoding="ascii") as public:
            return private.read(), HostKey.parse(public.read())


def pinned_options(key: HostKey) -> list[str]:
    """``ssh`` options that accept ``key``, and only ``key``, from the target.

    The key reaches ``ssh`` on its command line (``KnownHostsCommand``, OpenSSH 8.5+),
    not in a file: ``ssh`` closes every inherited descriptor, and a session that
    replaces the caller (``os.execvp``) would leave a temporary file behind.
    ``ControlPath=none``: a shared connection to the same address (another guest
    that had it before) would skip the check.
    """
    return ["-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"KnownHostsCommand=/bin/echo {ALIAS} {key}", "-o", f"HostKeyAlias={ALIAS}",
            "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
            "-o", "ControlMaster=no", "-o", "ControlPath=none"]


@dataclass(frozen=True)
class Probe:
    """What one ``ssh -v`` handshake showed: the presented key's fingerprint (``None`` if
    the handshake did not get that far) and the last line ``ssh`` wrote."""

    presented: str | None
    last: str


_SERVER_KEY = re.compile(r"debug1: Server host key: (\S+) (SHA256:\S+)")


def probe(argv: Sequence[str], timeout: float) -> Probe:
    """Run ``argv`` (an ``ssh -v`` without authentication) and read the host key the server showed."""
    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Probe(_presented(err), f"no answer within {timeout:.1f} s")
    except OSError as exc:
        raise HostKeyUnavailable(f"cannot run ssh to check the guest's host key: {exc.strerror}") from exc
    if "bad configuration option: knownhostscommand" in proc.stderr.lower():
        raise HostKeyUnavailable("checking a guest's host key needs OpenSSH 8.5 or later (KnownHostsCommand); "
                                 f"this ssh says: {proc.stderr.strip().splitlines()[0][:200]}")
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("debug")]
    return Probe(_presented(proc.stderr), lines[-1][:200] if lines else f"ssh exited {proc.returncode}")


def _presented(stderr: str) -> str | None:
    found = _SERVER_KEY.search(stderr)
    return found.group(2) if found else None


def check(expected: HostKey, seen: Probe, *, domain: str, address: str) -> bool:
    """Whether ``seen`` proves the guest holds ``expected``; :class:`HostKeyMismatch` if it shows another key."""
    if seen.presented is None:
        return False
    if seen.presented != expected.fingerprint:
        raise HostKeyMismatch(domain=domain, address=address, expected=expected.fingerprint,
                              presented=seen.presented)
    return True
