"""The one place libvirt errors become libvm errors (by error code, never by text)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import libvirt

from .errors import AlreadyExists, LibvirtFailure, LibvmError, NotFound

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
}
_EXISTS = {libvirt.VIR_ERR_DOM_EXIST, getattr(libvirt, "VIR_ERR_NETWORK_EXIST", -1)}

_quiet = False


def silence_default_handler() -> None:
    """Stop libvirt printing every error to stderr; libvm raises them instead.

    The handler is process-wide, so this runs once, on the first connect,
    not at import.
    """
    global _quiet
    if not _quiet:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _quiet = True


def convert(exc: libvirt.libvirtError, what: str) -> LibvmError:
    """The libvm error for a libvirt error raised while doing ``what``."""
    code = exc.get_error_code()
    message = f"{what}: {exc.get_error_message() or exc}"
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _EXISTS:
        return AlreadyExists(message)
    return LibvirtFailure(message, code)


def code_of(exc: BaseException) -> int | None:
    """libvirt's error code of ``exc`` (or of its ``__cause__``), if it has one."""
    if isinstance(exc, libvirt.libvirtError):
        return int(exc.get_error_code())
    if isinstance(exc, LibvirtFailure):
        return exc.code
    return None


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Re-raise any ``libvirtError`` in the block as a libvm error about ``what``."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise convert(exc, what) from exc
