"""The hypervisor's SSH, as a ``qemu+ssh://`` URI names it: to run a command there, or to jump through it.

libvirt's ssh transport runs the ``ssh`` client; libvm runs the same client
with the same user, host, port and key, so what works for the connection works
for ``dhcp_release`` on the hypervisor and for reaching a guest behind it
(``ssh -W``). The host key is checked as ``ssh`` checks it, against the
user's ``known_hosts`` (or the URI's ``known_hosts=`` file): never disabled
behind the user's back. ``no_verify=1`` in the URI, libvirt's own switch,
accepts a host key not seen before (and still refuses a changed one).

A guest libvm created knows its host key in advance (``SshTarget.host_key``,
from the VM's metadata): that key, and only that key, is accepted, whatever
``known_hosts`` says (:func:`libvm.hostkey.pinned_options`).
"""

from __future__ import annotations

import shlex
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidSpec

#: The URI schemes whose transport is SSH (libvirt's ``ssh``, ``libssh`` and ``libssh2``).
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")


@dataclass(frozen=True)
class SshTarget:
    """One SSH destination and how to reach it: ``user@host:port`` with a key and a ``known_hosts``."""

    host: str
    user: str | None = None
    port: int | None = None
    keyfile: str | None = None
    known_hosts: str | None = None
    accept_new: bool = False
    #: Reach this target through another one (``ssh -W``), e.g. a guest through its hypervisor.
    via: SshTarget | None = None
    #: The target's own host key, if known in advance (``"ssh-ed25519 AAAA..."``): checked, not learned.
    host_key: str | None = None
    #: The ssh client to run: ``ssh``, or the URI's ``command=`` (libvirt's own parameter, e.g. a
    #: wrapper that adds ``-F config``).
    program: str = "ssh"

    def __post_init__(self) -> None:
        for field, value in (("host", self.host), ("user", self.user)):
            if value is None and field == "user":
                continue
            # A leading '-' would reach ssh as an option, not a destination.
            if not isinstance(value, str) or not value or value.startswith("-") or not value.isprintable() \
                    or any(c.isspace() for c in value):
                raise InvalidSpec(field, value, "a host or user name for ssh (not empty, no white space, "
                                                "not starting with '-')")
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int)
                                      or not 1 <= self.port <= 65535):
            raise InvalidSpec("port", self.port, "a port from 1 to 65535")

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def options(self, known_hosts: str | None = None, *, batch: bool = True) -> list[str]:
        """The ``ssh`` options that reach this target (without the destination).

        ``batch=False`` lets ``ssh`` ask (a key's passphrase) in an interactive session.
        With a ``host_key``, that key and no other is accepted (:func:`libvm.hostkey.pinned_options`).
        """
        opts = ["-o", "BatchMode=yes"] if batch else []
        opts += ["-o", "ConnectTimeout=10"]
        if self.port is not None:
            opts += ["-p", str(self.port)]
        if self.keyfile is not None:
            opts += ["-i", self.keyfile, "-o", "IdentitiesOnly=yes"]
        if self.host_key is not None:
            from .hostkey import HostKey, pinned_options

            opts += pinned_options(HostKey.parse(self.host_key))
        else:
            hosts = known_hosts or self.known_hosts
            if hosts is not None:
                opts += ["-o", f"UserKnownHostsFile={hosts}"]
            opts += ["-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new else 'yes'}"]
        if self.via is not None:
            hop = shlex.join([self.via.program, *self.via.options(), "-W", "%h:%p", self.via.destination])
            opts += ["-o", f"ProxyCommand={hop}"]
        return opts

    def argv(self, command: Sequence[str], known_hosts: str | None = None) -> list[str]:
        """``ssh ... destination -- command`` (the command quoted for the remote shell)."""
        return [self.program, *self.options(known_hosts), self.destination, "--", shlex.join(command)]

    def probe_argv(self) -> list[str]:
        """``ssh -v`` that shows the host key and then gives up: no authentication is tried
        (``PreferredAuthentications=none``), so the server's "Permission denied" ends it."""
        return ["ssh", "-v", "-T", *self.options(), "-o", "PreferredAuthentications=none",
                "-o", "ControlPath=none", self.destination, "--", "true"]


def parse_target(text: object, field: str = "via") -> SshTarget:
    """``"[user@]host[:port]"`` as an :class:`SshTarget` (the user's ssh keys and ``known_hosts``)."""
    if not isinstance(text, str) or not text.strip() or not text.isprintable() or " " in text:
        raise InvalidSpec(field, text, "'user@host' or 'user@host:port'")
    parts = urllib.parse.urlsplit(f"ssh://{text}")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidSpec(field, text, "a port from 1 to 65535") from exc
    if not parts.hostname:
        raise InvalidSpec(field, text, "'user@host' or 'user@host:port'")
    try:
        return SshTarget(host=parts.hostname, user=parts.username, port=port)
    except InvalidSpec as exc:
        raise InvalidSpec(field, text, f"{exc.field}: {exc.reason}") from None


def hypervisor_target(uri: str) -> SshTarget | None:
    """The SSH target of a ``qemu+ssh://[user@]host[:port]/...`` URI (``None`` for other transports).

    The URI's ``keyfile=``, ``known_hosts=``, ``no_verify=`` and ``command=``
    parameters (libvirt's names) are kept. Raises :class:`InvalidSpec` for an SSH URI without a host.
    """
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.split("+", 1)
    if len(scheme) != 2 or scheme[1] not in SSH_TRANSPORTS:
        return None
    if not parts.hostname:
        raise InvalidSpec("uri", uri, "an SSH URI names the hypervisor's host: qemu+ssh://user@host/system")
    query = dict(urllib.parse.parse_qsl(parts.query))
    return SshTarget(host=parts.hostname, user=parts.username, port=parts.port, keyfile=query.get("keyfile"),
                     known_hosts=query.get("known_hosts"), accept_new=query.get("no_verify", "0") not in ("", "0"),
                     program=query.get("command") or "ssh")
