"""Converters: declared types decide, not YAML's guesses."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config.options import InvalidOption, Option, OptionSchema, Scope
from postroom.config.types import (
    BUILTIN_TYPES,
    Secret,
    TypeRegistry,
    UnknownType,
    convert,
)


def opt(type: str, **kwargs: object) -> Option:
    return Option(name="x", type=type, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10:00:00", 36000.0), ("00:05:00", 300.0), ("00:00:30", 30.0), ("100:00:00", 360000.0),
     ("0:00:01.5", 1.5), ("45", 45.0), (" 00:01:00 ", 60.0), (7, 7.0), (2.5, 2.5)],
)
def test_duration(text: object, seconds: float) -> None:
    assert convert(text, opt("duration")) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "05:00", "1:60:00", "00:00:60", "-5", "1.5", "",
                                  "true"])
def test_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM:SS"):
        convert(text, opt("duration"))


def test_text_stays_text() -> None:
    assert convert("10:00:00", opt("str")) == "10:00:00"
    assert convert("yes", opt("str")) == "yes"
    assert convert("0755", opt("str")) == "0755"


@pytest.mark.parametrize(
    ("text", "size"),
    [("10MB", 10 * 1024 * 1024), ("512KB", 512 * 1024), ("1GB", 1024**3), ("123", 123),
     ("10 MB", 10 * 1024 * 1024), ("10mb", 10 * 1024 * 1024), ("2k", 2048), ("1KiB", 1024),
     ("1.5MB", 1572864), ("100B", 100), (4096, 4096)],
)
def test_size(text: object, size: int) -> None:
    assert convert(text, opt("size")) == size


@pytest.mark.parametrize("text", ["10 parsecs", "MB", "-1KB", "1 0MB", "10MBB"])
def test_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        convert(text, opt("size"))


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("YES", True), ("On", True), ("false", False), ("no", False),
     ("OFF", False), (True, True)],
)
def test_bool(text: object, value: bool) -> None:
    assert convert(text, opt("bool")) is value


@pytest.mark.parametrize("text", ["1", "0", "y", "maybe", ""])
def test_bool_is_explicit(text: str) -> None:
    with pytest.raises(ValueError, match="true/false"):
        convert(text, opt("bool"))


def test_int_and_float() -> None:
    assert convert("42", opt("int")) == 42
    assert convert("-3", opt("int")) == -3
    for bad in ("4.2", "0x10", "1_000", "", "true"):
        with pytest.raises(ValueError, match="whole number"):
            convert(bad, opt("int"))
    with pytest.raises(ValueError, match="boolean"):
        convert(True, opt("int"))
    assert convert("0.25", opt("float")) == 0.25
    with pytest.raises(ValueError, match="finite"):
        convert("nan", opt("float"))


def test_minimum_maximum() -> None:
    assert convert("5", opt("int", minimum=1, maximum=5)) == 5
    with pytest.raises(ValueError, match="at least 1"):
        convert("0", opt("int", minimum=1))
    with pytest.raises(ValueError, match="at most 60 seconds"):
        convert("00:01:01", opt("duration", maximum=60))
    with pytest.raises(ValueError, match="at least 1024 bytes"):
        convert("1000", opt("size", minimum=1024))


def test_port() -> None:
    assert convert("993", opt("port")) == 993
    assert convert("65534", opt("port")) == 65534
    for bad in ("0", "65535", "-1", "imap"):
        with pytest.raises(ValueError, match="1 to 65534"):
            convert(bad, opt("port"))


def test_path_relative_to_base(tmp_path: Path) -> None:
    assert convert("var/x.db", opt("path"), base_dir=tmp_path) == tmp_path / "var/x.db"
    assert convert("/abs/x.db", opt("path"), base_dir=tmp_path) == Path("/abs/x.db")
    assert convert("var/x.db", opt("path")) == Path("var/x.db")
    with pytest.raises(ValueError, match="empty"):
        convert("", opt("path"))


def test_secret_never_prints() -> None:
    secret = convert("hunter22", opt("secret"))
    assert isinstance(secret, Secret)
    assert secret.reveal() == "hunter22"
    assert str(secret) == repr(secret) == f"{secret}" == "***"
    assert "hunter22" not in repr([secret, {"p": secret}])
    assert secret == Secret("hunter22") and secret != Secret("other")
    assert len({secret, Secret("hunter22")}) == 1
    assert not Secret("")


def test_choice() -> None:
    option = opt("choice", choices=("LEAVE", "REMOVE"))
    assert convert("LEAVE", option) == "LEAVE"
    assert convert("remove", option) == "REMOVE"
    with pytest.raises(ValueError, match="expected one of: LEAVE, REMOVE"):
        convert("KEEP", option)


def test_list() -> None:
    assert convert(["dsn", "mdn"], opt("list")) == ["dsn", "mdn"]
    assert convert("dsn, mdn,", opt("list")) == ["dsn", "mdn"]
    assert convert("", opt("list")) == []
    with pytest.raises(ValueError, match="single values"):
        convert([["a"]], opt("list"))
    with pytest.raises(ValueError, match="not a mapping"):
        convert({"a": "b"}, opt("list"))


def test_scalar_types_refuse_structures() -> None:
    with pytest.raises(ValueError, match="not a list"):
        convert(["a"], opt("str"))
    with pytest.raises(ValueError, match="not a mapping"):
        convert({"a": "b"}, opt("int"))


def test_email_url_mapping() -> None:
    assert convert("a@example.com", opt("email")) == "a@example.com"
    assert convert("Support <a@example.com>", opt("email")) == "Support <a@example.com>"
    for bad in ("example.com", "a@", "@b", "a b@c"):
        with pytest.raises(ValueError, match="e-mail address"):
            convert(bad, opt("email"))
    assert convert("https://host/ews/exchange.asmx", opt("url")).startswith("https://")
    for bad in ("host/ews", "https://", "mailto:a@b"):
        with pytest.raises(ValueError, match="URL"):
            convert(bad, opt("url"))
    assert convert({"a": "1"}, opt("mapping")) == {"a": "1"}
    with pytest.raises(ValueError, match="mapping"):
        convert("a", opt("mapping"))


def test_registry_per_schema_and_global() -> None:
    schema = OptionSchema()

    def hostport(value: object, option: Option) -> tuple[str, int]:
        """host:port"""
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("expected host:port")
        return host, int(port)

    schema.register_type("hostport", hostport)
    option = schema.add("relay", "hostport", section="x", default="mx:25")
    assert schema.types.convert("smtp.example.com:587", option) == ("smtp.example.com", 587)
    assert "hostport" in schema.types and "hostport" not in BUILTIN_TYPES
    assert "str" in schema.types
    with pytest.raises(ValueError, match="already registered"):
        schema.register_type("hostport", hostport)
    schema.register_type("hostport", hostport, replace=True)
    with pytest.raises(UnknownType, match="unknown option type 'nope'"):
        TypeRegistry().get("nope")


def test_declarations_are_checked() -> None:
    schema = OptionSchema()
    with schema.declaring("acme"), pytest.raises(InvalidOption, match=r"acme.*unknown option type"):
        schema.add("a", "strnig", section="s")
    with pytest.raises(InvalidOption, match="needs choices"):
        schema.add("b", "choice", section="s")
    with pytest.raises(InvalidOption, match="default '1m'"):
        schema.add("c", "duration", section="s", default="1m")
    with pytest.raises(InvalidOption, match="structural"):
        schema.add("server", section="smtp-client")
    schema.add("d", section="s", aliases=("d_old",))
    with pytest.raises(ValueError, match="declared twice"):
        schema.add("d_old", section="s")
    schema.add("d_old", section="other")  # another place: fine
    schema.add("e", scope=Scope.MAILBOX, types=("imap",))
    schema.add("e", scope=Scope.MAILBOX, types=("maildir",))  # other drivers: fine
