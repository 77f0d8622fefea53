"""Small XML helpers shared by the parser (S3 request bodies) and the serializer (all responses).

Writing: a minimal element type rendered by hand rather than through ElementTree, because AWS
XML must survive any string a client stored (a tag value, an object key): ElementTree leaves
control characters and carriage returns as they are, which yields documents XML parsers reject
or silently alter. Here every text and attribute value goes through `escape`.

Reading: ElementTree over expat, refusing any document type declaration up front so entity
tricks (billion laughs, external entities) never reach the parser.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

# Characters XML 1.0 cannot carry at all, even as character references.
_INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"}
_ESCAPE_RE = re.compile('[&<>"\r]')


def xml_can_carry(value: str) -> bool:
    """Whether an answer can give `value` back as it is (a name or tag with NUL or another C0
    control character would be listed as U+FFFD, and could then not be named again)."""
    return _INVALID_XML_CHARS.search(value) is None


def escape(value: str) -> str:
    """Escape `value` for element text or a double-quoted attribute.

    Carriage returns become character references (parsers would normalise a raw one into a
    newline); characters XML cannot represent become U+FFFD rather than a broken document.
    """
    value = _INVALID_XML_CHARS.sub("\ufffd", value)
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], value)


@dataclass
class Element:
    """An XML element under construction: a tag, attributes, and either text or children."""

    tag: str
    text: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element] = field(default_factory=list)

    def add(self, tag: str, text: str | None = None) -> Element:
        child = Element(tag, text)
        self.children.append(child)
        return child

    def render(self, out: list[str]) -> None:
        attrs = "".join(f' {name}="{escape(value)}"' for name, value in self.attrs.items())
        if not self.children and not self.text:
            out.append(f"<{self.tag}{attrs}/>")
            return
        out.append(f"<{self.tag}{attrs}>")
        if self.text:
            out.append(escape(self.text))
        for child in self.children:
            child.render(out)
        out.append(f"</{self.tag}>")

    def to_bytes(self, declaration: bool = True) -> bytes:
        out: list[str] = [XML_DECLARATION] if declaration else []
        self.render(out)
        return "".join(out).encode("utf-8")


class XmlError(ValueError):
    """The document is not well-formed XML (or uses a feature we refuse)."""


def parse_xml(body: bytes) -> ET.Element:
    """Parse a request body; raise XmlError for anything but a plain well-formed document."""
    # A DOCTYPE is never needed by an AWS API and is the door to entity expansion attacks.
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise XmlError("document type declarations are not allowed")
    try:
        parser = ET.XMLParser()
        parser.feed(body)
        return parser.close()
    except (ET.ParseError, ValueError, UnicodeError) as exc:
        raise XmlError(str(exc)) from exc


def local_name(tag: str) -> str:
    """`{namespace}Name` → `Name` (and `prefix:Name` attributes → `Name`)."""
    if tag.startswith("{"):
        tag = tag.rsplit("}", 1)[-1]
    return tag.rsplit(":", 1)[-1]
