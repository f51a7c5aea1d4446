"""Site configuration: option declarations, YAML loading and validation, docs.

Typical use by the kernel::

    document = read_document(path)
    names = document.driver_names()      # load these drivers; they declare options
    config = validate(document, schema)  # raises ConfigErrors listing every problem
"""

from postroom.config.loader import (
    Document,
    DriverNames,
    MailboxConfig,
    OptionValues,
    SectionConfig,
    SiteConfig,
    defaults,
    load,
    parse_document,
    read_document,
    validate,
)
from postroom.config.options import Option, OptionSchema, Scope
from postroom.config.types import Secret, register_type

__all__ = [
    "Document",
    "DriverNames",
    "MailboxConfig",
    "Option",
    "OptionSchema",
    "OptionValues",
    "Scope",
    "Secret",
    "SectionConfig",
    "SiteConfig",
    "defaults",
    "load",
    "parse_document",
    "read_document",
    "register_type",
    "validate",
]
