"""Site configuration: option declarations, YAML loading and validation, docs.

One job per module, lowest first: ``declaration`` (what an option is),
``types`` (converters), ``options`` (the schema), ``interpolate`` (``${...}``),
``document`` (YAML with positions, the driver pre-scan), ``site`` (the validated
model), ``validator`` (document + schema -> model), ``loader`` (the one-call
entry functions), ``core`` (the kernel's declarations), ``docs`` (the reference).

Typical use by the kernel::

    document = read_document(path)
    names = document.driver_names()      # load these drivers (if installed): they declare options
    config = validate(document, schema, drivers=installed)  # ConfigErrors lists every problem,
                                                            # unknown driver names included
"""

from postroom.config.declaration import Option, Scope
from postroom.config.document import Document, DriverNames, parse_document, read_document
from postroom.config.loader import default_site, defaults, load
from postroom.config.options import OptionSchema
from postroom.config.site import MailboxConfig, OptionValues, SectionConfig, SiteConfig
from postroom.config.types import Secret, register_type
from postroom.config.validator import InstalledDrivers, validate

__all__ = [
    "Document",
    "DriverNames",
    "InstalledDrivers",
    "MailboxConfig",
    "Option",
    "OptionSchema",
    "OptionValues",
    "Scope",
    "Secret",
    "SectionConfig",
    "SiteConfig",
    "default_site",
    "defaults",
    "load",
    "parse_document",
    "read_document",
    "register_type",
    "validate",
]
