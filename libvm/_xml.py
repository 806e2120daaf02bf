"""lxml helpers shared by the spec modules: one hardened parser, one serialiser."""

from __future__ import annotations

from lxml import etree

from .errors import InvalidSpec

# libvirt's XML never needs entities or DTDs; refusing them closes XXE and
# billion-laughs on documents read back from a daemon or a user.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, remove_blank_text=True, load_dtd=False
)


def parse(text: str | bytes, what: str = "xml") -> etree._Element:
    """Parse one XML document with the hardened parser."""
    if not isinstance(text, (str, bytes)):
        raise InvalidSpec(what, text, "XML as str or bytes")
    data = text.encode() if isinstance(text, str) else text
    try:
        return etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidSpec(what, text[:80], f"not well-formed XML: {exc}") from exc


def to_string(element: etree._Element) -> str:
    """Serialise with indentation, as libvirt's own dumps look."""
    return etree.tostring(element, pretty_print=True, encoding="unicode")


def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    """Append ``<tag attrs>text</tag>`` to ``parent``; lxml escapes every value."""
    child = etree.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child
