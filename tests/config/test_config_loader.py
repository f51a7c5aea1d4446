"""Loading and validating site configurations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.config import (
    DriverNames,
    OptionSchema,
    Scope,
    Secret,
    default_site,
    defaults,
    load,
    parse_document,
    read_document,
    validate,
)
from postroom.errors import ConfigError, ConfigErrors

Write = Callable[..., Path]

#: the OAuth options every mailbox has (declared by the kernel, read by the OAuth drivers)
OAUTH_DEFAULTS = {
    "directory-id": None, "tenant-authority": None, "client-id": None, "scope": None,
    "token-expiry-margin-time": 300.0, "secret": None, "client-certificate-file": None,
    "service-account-file": None, "token-endpoint": None, "token-ca-file": None,
}
#: the identity options of every mailbox (docs/outbound.md, "Mailbox identity")
IDENTITY_DEFAULTS = {
    "address": None, "display-name": None, "signature-text-file": None,
    "signature-html-file": None, "smtp-user": None, "smtp-password": None,
}


def errors_of(path: Path, schema: OptionSchema, **kwargs: object) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        load(path, schema, **kwargs)  # type: ignore[arg-type]
    return info.value.errors


def only_error(path: Path, schema: OptionSchema, **kwargs: object) -> ConfigError:
    errors = errors_of(path, schema, **kwargs)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


# --- the example of the issue ---------------------------------------------------------


def test_example_loads_as_written(write: Write, schema: OptionSchema, example: str) -> None:
    path = write(example)
    config = load(path, schema, environ={})
    base = path.parent
    assert config.path == path and config.base_dir == base
    assert config.tenant_id == 101
    assert config.store_driver == "sqlite"
    assert config.store_options == {"path": base / "var/postroom.db", "busy-timeout": 10.0,
                                    "synchronous": "FULL"}
    assert config.plugins is None
    assert config.get("email-processing", "default-domain") == "example.com"
    assert config.get("email-processing", "maximum-msg-size") == 10 * 1024 * 1024
    assert config.get("email-processing", "enable-message-id-check") is True
    # absent options and sections are filled with their defaults
    assert config.get("email-processing", "max-mime-depth") == 20
    assert config.sections["gateway"]["handoff-retry-max"] == 300.0
    assert config.get("logging", "level") == "info"
    assert config.get("http", "token") is None
    [mailbox] = config.mailboxes
    assert (mailbox.name, mailbox.type, mailbox.auth) == ("support", "maildir", "basic")
    assert mailbox.get("folder-path") == base / "examples/quickstart/maildir"
    assert mailbox.options == {
        "name": "support", "type": "maildir", "auth": "basic", "enabled": True,
        "poll-interval": 60.0, "folder-path": base / "examples/quickstart/maildir",
        **OAUTH_DEFAULTS, **IDENTITY_DEFAULTS,
    }
    assert mailbox.passthrough == {}
    assert (mailbox.file, mailbox.line) == (str(path), 9)
    assert config.smtp is not None and config.smtp.server_type == "file"
    assert config.smtp.get("folder-path") == base / "var/outbox"
    assert config.get("smtp-client", "folder-path") == base / "var/outbox"
    assert config.secrets == {} and config.warnings == []
    assert config.line_of("email-processing", "maximum-msg-size") == 6
    assert config.line_of(None, "tenant-id") == 1
    assert config.line_of("store", "path") == 2


def test_driver_names(write: Write, example: str) -> None:
    assert read_document(write(example)).driver_names() == DriverNames(
        store="sqlite", sources=["maildir"], senders=["file"],
        auth=[("postroom.sources", "maildir", "basic")], plugins=None,
    )
    doc = read_document(write("""\
store: {driver: postgresql, dsn: x}
plugins: [dsn, mdn]
pop-client:
  - {name: a, type: imap}
  - {name: b, type: pop3, auth: azure-ropc}
  - {name: c, type: imap, auth: basic}
  - {name: d, type: maildir, auth: ignored}
"""))
    assert doc.driver_names() == DriverNames(
        store="postgresql", sources=["imap", "pop3", "maildir"], senders=[],
        auth=[("postroom.sources", "imap", "basic"), ("postroom.sources", "pop3", "azure-ropc"),
              ("postroom.sources", "maildir", "ignored")],
        plugins=["dsn", "mdn"],
    )
    assert read_document(write("")).driver_names() == DriverNames()
    assert read_document(write("plugins: []\n")).driver_names().plugins == []
    assert parse_document("plugins: dsn, mdn").driver_names().plugins == ["dsn", "mdn"]
    # malformed parts are left to validate()
    assert parse_document("pop-client: 3\nstore: [x]").driver_names() == DriverNames()


def test_default_config(schema: OptionSchema, tmp_path: Path) -> None:
    config = default_site(schema, base_dir=tmp_path)
    assert config.path is None and config.mailboxes == [] and config.smtp is None
    assert config.store_driver == "sqlite"
    assert config.store_options["path"] == tmp_path / "var/postroom.db"
    assert config.tenant_id == 1
    assert config.get("gateway", "handoff-retry-initial") == 5.0
    assert config.get("http", "port") == 7678


def test_empty_file_is_an_empty_config(write: Write, schema: OptionSchema) -> None:
    for text in ("", "# only a comment\n", "---\n", "~\n"):
        config = load(write(text), schema)
        assert config.mailboxes == [] and config.tenant_id == 1
        assert config.sections["email-processing"]["default-domain"] == "localhost"


# --- values by declared type ----------------------------------------------------------


def test_values_converted_by_declared_type_not_yaml(write: Write, schema: OptionSchema) -> None:
    with schema.declaring("test"):
        schema.add("window", "duration", section="t")
        schema.add("label", section="t")
        schema.add("answer", section="t")
        schema.add("limit", "size", section="t")
        schema.add("octal", section="t")
    config = load(write("""\
t:
  window: 10:00:00
  label: 10:00:00
  answer: yes
  limit: 512KB
  octal: 0755
"""), schema)
    assert config.get("t", "window") == 36000.0
    assert config.get("t", "label") == "10:00:00"
    assert config.get("t", "answer") == "yes"
    assert config.get("t", "limit") == 512 * 1024
    assert config.get("t", "octal") == "0755"


def test_sizes(write: Write, schema: OptionSchema) -> None:
    cases = (("10MB", 10485760), ("0.5GB", 536870912), ("123", 123), ("'10 MB'", 10485760))
    for text, size in cases:
        config = load(write(f"email-processing: {{maximum-msg-size: {text}}}\n"), schema)
        assert config.get("email-processing", "maximum-msg-size") == size


def test_null_means_default(write: Write, schema: OptionSchema) -> None:
    config = load(write("email-processing:\n  default-domain:\n  max-mime-depth: ~\n"), schema)
    assert config.get("email-processing", "default-domain") == "localhost"
    assert config.get("email-processing", "max-mime-depth") == 20
    config = load(write("email-processing: {default-domain: ''}\n"), schema)
    assert config.get("email-processing", "default-domain") == ""


def test_alias_is_stored_under_canonical_name(write: Write, schema: OptionSchema) -> None:
    config = load(write("email-processing: {default_domain: example.org}\n"), schema)
    assert config.sections["email-processing"]["default-domain"] == "example.org"
    assert "default_domain" not in config.sections["email-processing"]
    assert config.get("email-processing", "default_domain") == "example.org"
    error = only_error(
        write("email-processing:\n  default_domain: a\n  default-domain: b\n"), schema
    )
    assert error.line == 3 and "twice" in str(error) and "line 2" in str(error)


def test_plugins_list(write: Write, schema: OptionSchema) -> None:
    assert load(write("plugins: [dsn, mdn]\n"), schema).plugins == ["dsn", "mdn"]
    assert load(write("plugins: []\n"), schema).plugins == []
    error = only_error(write("plugins: {a: b}\n"), schema)
    assert error.option == "plugins" and "list" in error.message


def test_single_mailbox_mapping_is_a_list_of_one(write: Write, schema: OptionSchema) -> None:
    config = load(write("pop-client: {name: m, type: maildir, folder-path: md}\n"), schema)
    assert [m.name for m in config.mailboxes] == ["m"]


def test_mailboxes_of_several_types(write: Write, schema: OptionSchema) -> None:
    config = load(write("""\
pop-client:
  - name: agent1
    type: imap
    server: imap.example.com
    port: 993
    password: ${AGENT1_PASSWORD}
    connect-timeout: 00:00:10
    greeting: 10:00:00
  - name: legacy
    type: pop3
    server: pop.example.com
    auth: azure-ropc
    mail.pop3.disabletop: yes
"""), schema, environ={"AGENT1_PASSWORD": "s3cr3t-pw"})
    agent1, legacy = config.mailboxes
    assert agent1.get("port") == 993 and agent1.get("connect-timeout") == 10.0
    assert agent1.get("greeting") == "10:00:00"
    assert agent1.get("password").reveal() == "s3cr3t-pw"
    assert "mail.pop3.disabletop" not in agent1.options  # declared for pop3 only
    assert legacy.auth == "azure-ropc" and legacy.get("mail.pop3.disabletop") is True
    assert legacy.get("password") is None and legacy.get("port") is None
    assert config.mailbox("legacy") is legacy
    with pytest.raises(KeyError):
        config.mailbox("nope")
    with pytest.raises(KeyError, match="folder-path"):
        agent1.get("folder-path")  # a maildir option, not declared for imap
    assert agent1.line_of("port") == 5 and agent1.line_of() == 2


def test_store_drivers(write: Write, schema: OptionSchema) -> None:
    config = load(write('store: {driver: postgresql, dsn: "${PG_DSN}"}\n'), schema,
                  environ={"PG_DSN": "postgresql://u:pw@db/postroom"})
    assert config.store_driver == "postgresql"
    assert isinstance(config.store_options["dsn"], Secret)
    assert "pw@db" not in repr(config)
    assert config.get("store", "driver") == "postgresql"
    error = only_error(write("store: {driver: postgresql, path: x.db, dsn: y}\n"), schema)
    assert error.option == "store.path"
    assert "not an option of store driver postgresql (only of: sqlite)" in error.message
    error = only_error(write("store: {driver: sqlite, dns: x}\n"), schema)
    assert error.option == "store.dns"
    error = only_error(write("store: sqlite\n"), schema)
    assert "'store' must be a mapping" in error.message


def test_secret_sections(write: Write, schema: OptionSchema) -> None:
    config = load(write("secret-google:\n  password: ${GOOGLE_SECRET}\n"), schema,
                  environ={"GOOGLE_SECRET": "g-client-secret"})
    assert config.secrets["google"].name == "secret-google"
    assert config.secrets["google"].get("password").reveal() == "g-client-secret"
    assert config.get("secret-google", "password").reveal() == "g-client-secret"
    assert "g-client-secret" not in repr(config)
    error = only_error(write("secret-google: {pasword: x}\n"), schema)
    assert error.option == "secret-google.pasword" and "did you mean 'password'?" in str(error)
    error = only_error(write("secret-: {password: x}\n"), schema)
    assert "secret-<name>" in error.message


def test_merge_keys_share_settings(write: Write, schema: OptionSchema) -> None:
    config = load(write("""\
pop-client:
  - &first
    name: a
    type: imap
    server: imap.example.com
    port: 143
  - <<: *first
    name: b
    port: 993
"""), schema)
    a, b = config.mailboxes
    assert (a.name, a.get("port")) == ("a", 143)
    assert (b.name, b.type, b.get("server")) == ("b", "imap", "imap.example.com")
    assert b.get("port") == 993 and b.line_of("port") == 9


def test_get_unknown(schema: OptionSchema, tmp_path: Path) -> None:
    config = default_site(schema, base_dir=tmp_path)
    with pytest.raises(KeyError):
        config.get("email-processing", "nope")
    with pytest.raises(KeyError):
        config.get("nope", "x")
    with pytest.raises(KeyError):
        config.get("smtp-client", "server-type")


# --- secrets and interpolation --------------------------------------------------------


def test_env_and_file_secrets(write: Write, schema: OptionSchema, tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("file-token-value\n")
    path = write("""\
http:
  token: ${file:secrets/token}
secret-azure:
  password: ${AZURE_SECRET}
secret-other:
  password: ${MISSING:-fallback-value}
email-processing:
  default-domain: ${DOMAIN:-example.net}
""")
    config = load(path, schema, environ={"AZURE_SECRET": "env-secret-value"})
    assert config.get("http", "token").reveal() == "file-token-value"
    assert config.secrets["azure"].get("password").reveal() == "env-secret-value"
    assert config.secrets["other"].get("password").reveal() == "fallback-value"
    assert config.get("email-processing", "default-domain") == "example.net"
    for text in (repr(config), str(config), repr(config.sections), repr(config.secrets)):
        assert "file-token-value" not in text and "env-secret-value" not in text
        assert "fallback-value" not in text


def test_interpolation_forms(write: Write, schema: OptionSchema, tmp_path: Path) -> None:
    (tmp_path / "abs").write_text("crlf\r\n\n")
    path = write(f"""\
email-processing:
  default-domain: "$${{literal}}-${{EMPTY:-dflt}}"
secret-a: {{password: "${{file:{tmp_path / 'abs'}}}"}}
secret-b: {{password: "pre-${{X}}-post"}}
""")
    config = load(path, schema, environ={"EMPTY": "", "X": "mid"})
    assert config.get("email-processing", "default-domain") == "${literal}-dflt"
    assert config.secrets["a"].get("password").reveal() == "crlf\r\n"  # one newline stripped
    assert config.secrets["b"].get("password").reveal() == "pre-mid-post"


def test_missing_variable_names_option_and_variable(write: Write, schema: OptionSchema) -> None:
    path = write("pop-client:\n  - name: agent1\n    type: imap\n    server: h\n"
                 "    password: ${AGENT1_PASSWORD}\n")
    error = only_error(path, schema, environ={})
    assert error.option == "pop-client[agent1].password" and error.line == 5
    assert "AGENT1_PASSWORD is not set" in str(error)


def test_interpolation_errors(write: Write, schema: OptionSchema) -> None:
    path = write("""\
secret-a: {password: "${file:nope/missing}"}
secret-b: {password: "${not a name}"}
secret-c: {password: "${UNTERMINATED"}
""")
    a, b, c = errors_of(path, schema, environ={})
    assert a.line == 1 and "cannot read" in a.message and "missing" in a.message
    assert b.line == 2 and "invalid '${...}' reference" in b.message
    assert c.line == 3 and "unterminated" in c.message


def test_secret_values_never_in_errors(write: Write, schema: OptionSchema) -> None:
    with schema.declaring("test"):
        schema.add("api-key", "int", section="t", secret=True)
    env = {"PORT": "not-a-port-value", "KEY": "key-material-123"}
    path = write("""\
t: {api-key: "${KEY}"}
http:
  port: ${PORT}
  token: [a-secret-in-a-list]
""")
    errors = errors_of(path, schema, environ=env)
    text = "\n".join(str(e) for e in errors) + repr(errors)
    assert "not-a-port-value" not in text and "key-material-123" not in text
    assert "a-secret-in-a-list" not in text
    assert len(errors) == 3
    port = next(e for e in errors if e.option == "http.port")
    assert port.line == 3 and "not shown" in port.message


def test_secret_option_of_another_type_is_redacted_in_repr(
    write: Write, schema: OptionSchema
) -> None:
    with schema.declaring("test"):
        schema.add("api-key", section="t", secret=True)
    config = load(write("t: {api-key: literal-key-material}\n"), schema)
    assert config.get("t", "api-key") == "literal-key-material"
    assert "literal-key-material" not in repr(config)
    assert "'api-key': ***" in repr(config.sections["t"])


# --- errors -----------------------------------------------------------------------------


def test_error_names_file_line_option_and_suggests(write: Write, schema: OptionSchema) -> None:
    path = write("tenant-id: 3\nemail-processing:\n  defualt-domain: example.com\n")
    error = only_error(path, schema)
    assert (error.file, error.line, error.option) == (
        str(path), 3, "email-processing.defualt-domain"
    )
    assert str(error) == (
        f"{path}:3: option 'email-processing.defualt-domain': unknown option in section "
        "'email-processing'; did you mean 'default-domain'?"
    )


def test_all_errors_collected_at_once(write: Write, schema: OptionSchema) -> None:
    path = write("""\
tenant-id: abc
tenantid: 3
default-domain: x
email-processing:
  defualt-domain: example.com
  maximum-msg-size: 10 parsecs
  enable-message-id-check: maybe
logging: {level: loud}
pop-client:
  - name: support
    type: maildir
    poll-interval: 10 minutes
smtp-client:
  folder-path: var/outbox
""")
    errors = errors_of(path, schema)
    assert [(e.line, e.option) for e in errors] == [
        (1, "tenant-id"),
        (2, "tenantid"),
        (3, "default-domain"),
        (5, "email-processing.defualt-domain"),
        (6, "email-processing.maximum-msg-size"),
        (7, "email-processing.enable-message-id-check"),
        (8, "logging.level"),
        (10, "pop-client[support].folder-path"),
        (12, "pop-client[support].poll-interval"),
        (13, "smtp-client.server-type"),
    ]
    messages = [e.message for e in errors]
    assert "did you mean 'tenant-id'?" in messages[1]
    assert "not an option of the top level but of section 'email-processing'" in messages[2]
    assert "(got '10 parsecs')" in messages[4]
    assert "expected one of: debug, info, warning, error" in messages[6]
    assert "required option missing from mailbox 'support'" in messages[7]
    assert all(e.file == str(path) for e in errors)


def test_unknown_top_level_key(write: Write, schema: OptionSchema) -> None:
    error = only_error(write("pop-clients: []\n"), schema)
    assert error.option == "pop-clients" and "did you mean 'pop-client'?" in error.message
    error = only_error(write("zzz: 1\n"), schema)
    assert "valid here:" in error.message and "email-processing" in error.message


def test_duplicate_keys(write: Write, schema: OptionSchema) -> None:
    path = write("tenant-id: 1\nemail-processing: {}\ntenant-id: 2\n")
    error = only_error(path, schema)
    assert (error.line, error.option) == (3, "tenant-id")
    assert "duplicate key 'tenant-id' (first given at line 1)" in error.message
    error = only_error(
        write("pop-client:\n  - name: a\n    type: maildir\n    folder-path: x\n"
              "    folder-path: y\n"),
        schema,
    )
    assert (error.line, error.option) == (5, "pop-client[a].folder-path")


def test_duplicate_mailbox_names(write: Write, schema: OptionSchema) -> None:
    path = write("""\
pop-client:
  - {name: support, type: maildir, folder-path: a}
  - {name: sales, type: maildir, folder-path: b}
  - {name: support, type: maildir, folder-path: c}
""")
    error = only_error(path, schema)
    assert (error.line, error.option) == (4, "pop-client[support].name")
    assert "duplicate mailbox name 'support' (first at line 2)" in error.message


def test_option_of_another_mailbox_type(write: Write, schema: OptionSchema) -> None:
    path = write("""\
pop-client:
  - name: legacy
    type: pop3
    server: pop.example.com
    folder-path: inbox
  - name: local
    type: maildir
    folder-path: md
    server: imap.example.com
""")
    first, second = errors_of(path, schema)
    assert (first.line, first.option) == (5, "pop-client[legacy].folder-path")
    assert first.message == (
        "'folder-path' is not an option of mailboxes of type pop3 (only of: maildir)"
    )
    assert (second.line, second.option) == (9, "pop-client[local].server")
    assert "not an option of mailboxes of type maildir" in second.message


def test_required_option_missing(write: Write, schema: OptionSchema) -> None:
    path = write("""\
tenant-id: 1
pop-client:
  - name: agent1
    type: imap
  - type: maildir
    folder-path: md
""")
    first, second = errors_of(path, schema)
    assert (first.line, first.option) == (3, "pop-client[agent1].server")
    assert first.message == "required option missing from mailbox 'agent1'"
    assert (second.line, second.option) == (5, "pop-client[#2].name")
    assert "'pop-client' entry #2" in second.message


def test_structure_errors(write: Write, schema: OptionSchema) -> None:
    error = only_error(write("- a\n- b\n"), schema)
    assert error.line == 1 and "must be a mapping" in error.message
    error = only_error(write("pop-client: support\n"), schema)
    assert error.option == "pop-client" and "list of mailboxes" in error.message
    error = only_error(write("pop-client: [support]\n"), schema)
    assert error.option == "pop-client[#1]"
    error = only_error(write("email-processing: [a]\n"), schema)
    assert "section 'email-processing' must be a mapping" in error.message
    error = only_error(write("email-processing: {max-mime-depth: [1, 2]}\n"), schema)
    assert "not a list" in error.message


def test_yaml_syntax_error_names_file_and_line(write: Write, schema: OptionSchema) -> None:
    path = write("tenant-id: 1\nemail-processing:\n  default-domain: [unclosed\n"
                 "secret-x: {password: do-not-print-me}\n")
    with pytest.raises(ConfigErrors) as info:
        read_document(path)
    [error] = info.value.errors
    assert error.file == str(path) and error.line is not None and error.line >= 3
    assert "YAML syntax error" in error.message
    assert "do-not-print-me" not in str(info.value)
    with pytest.raises(ConfigErrors, match=r"postroom.yaml:2: YAML syntax error"):
        load(write("a: 1\n\tb: 2\n"), schema)


def test_unreadable_file(tmp_path: Path, schema: OptionSchema) -> None:
    with pytest.raises(ConfigErrors, match="cannot read the configuration"):
        load(tmp_path / "missing.yaml", schema)


def test_unknown_declared_type_is_reported(schema: OptionSchema, write: Write) -> None:
    # a type unregistered after declaration (defensive path)
    def fn(value: object, option: object) -> object:
        return value

    schema.register_type("temp", fn)
    with schema.declaring("test"):
        schema.add("v", "temp", section="t")
    schema.types._types.pop("temp")
    error = only_error(write("t: {v: 1}\n"), schema)
    assert "unknown option type 'temp'" in error.message and "by test" in error.message


# --- pass-through properties ------------------------------------------------------------


def test_mail_passthrough_warnings(write: Write, schema: OptionSchema) -> None:
    path = write("""\
pop-client:
  - name: legacy
    type: pop3
    server: pop.example.com
    mail.pop3.disabletop: true
    mail.pop3.rsetbeforequit: true
  - name: agent1
    type: imap
    server: imap.example.com
    mail.pop3.disabletop: true
    mail.imap.partialfetch: "false"
smtp-client:
  server-type: file
  folder-path: out
  mail.smtp.localhost: gw.example.com
""")
    config = load(path, schema)
    legacy, agent1 = config.mailboxes
    assert legacy.get("mail.pop3.disabletop") is True
    assert legacy.passthrough == {"mail.pop3.rsetbeforequit": "true"}
    assert agent1.passthrough == {
        "mail.pop3.disabletop": "true", "mail.imap.partialfetch": "false"
    }
    assert config.smtp is not None
    assert config.smtp.passthrough == {"mail.smtp.localhost": "gw.example.com"}
    assert [(w.line, w.option) for w in config.warnings] == [
        (6, "pop-client[legacy].mail.pop3.rsetbeforequit"),
        (10, "pop-client[agent1].mail.pop3.disabletop"),
        (11, "pop-client[agent1].mail.imap.partialfetch"),
        (15, "smtp-client.mail.smtp.localhost"),
    ]
    assert all(w.file == str(path) for w in config.warnings)
    assert config.warnings[0].message.startswith(
        "pass-through property 'mail.pop3.rsetbeforequit' is not honoured by postroom; "
        "honoured: mail.pop3.disabletop, mail.pop3.proxy.host,"
    )
    assert config.warnings[1].message.endswith("honoured: " + ", ".join(
        f"mail.imap.{k}" for k in ("proxy.host", "proxy.password", "proxy.port", "proxy.user",
                                   "socks.host", "socks.port")))
    assert "honoured: mail.imap.proxy.host," in config.warnings[2].message


# --- helpers for later checks -----------------------------------------------------------


def test_error_helpers_point_at_the_file(
    write: Write, schema: OptionSchema, example: str
) -> None:
    path = write(example)
    config = load(path, schema)
    error = config.error("must be a real domain", "email-processing", "default-domain")
    assert str(error) == (
        f"{path}:5: option 'email-processing.default-domain': must be a real domain"
    )
    assert config.mailboxes[0].error("no such directory", "folder-path").line == 11
    assert config.smtp is not None and config.smtp.error("x").line == 12
    assert config.error("x", "gateway", "concurrency").line is None  # not in the file


def test_validate_a_string_document(schema: OptionSchema, tmp_path: Path) -> None:
    doc = parse_document("store: {path: db.sqlite}\n", base_dir=tmp_path)
    config = validate(doc, schema)
    assert config.store_options["path"] == tmp_path / "db.sqlite"
    doc = parse_document("store: {dsn: x}\n", file="inline.yaml")
    with pytest.raises(ConfigErrors, match=r"^inline.yaml:1: option 'store.dsn'"):
        validate(doc, schema)


def test_scope_secret_option_declared_by_plugin(write: Write, schema: OptionSchema) -> None:
    with schema.declaring("google"):
        schema.add("client-id", scope=Scope.SECRET, description="OAuth client id")
    config = load(write("secret-google: {password: p, client-id: cid}\n"), schema)
    assert config.secrets["google"].get("client-id") == "cid"


def test_sensitive_passthrough_hidden_in_repr(write: Write, schema: OptionSchema) -> None:
    path = write("pop-client:\n  - {name: a, type: imap, server: h, "
                 "mail.imaps.proxy.password: proxy-pw-value, mail.imaps.proxy.host: px, "
                 "mail.imap.proxy.password: declared-pw-value}\n")
    [mailbox] = load(path, schema).mailboxes
    assert mailbox.passthrough["mail.imaps.proxy.password"] == "proxy-pw-value"
    assert "proxy-pw-value" not in repr(mailbox) and "'px'" in repr(mailbox)
    assert mailbox.get("mail.imap.proxy.password").reveal() == "declared-pw-value"
    assert "declared-pw-value" not in repr(mailbox)


def test_problem_in_merged_mapping_reported_once(write: Write, schema: OptionSchema) -> None:
    path = write("""\
x-maildir: &base
  type: maildir
  folder-path: md
  poll-intervall: 5
  folder-path: again
pop-client:
  - {<<: *base, name: a}
  - {<<: *base, name: b}
""")
    errors = errors_of(path, schema)
    assert [(e.line, e.option) for e in errors] == [
        (4, "pop-client[a].poll-intervall"),
        (4, "pop-client[b].poll-intervall"),
        (5, "pop-client[a].folder-path"),
        (5, "pop-client[b].folder-path"),
    ]
    assert "did you mean 'poll-interval'?" in errors[0].message
    assert "duplicate key 'folder-path'" in errors[2].message


def test_extension_keys_hold_anchors(write: Write, schema: OptionSchema) -> None:
    path = write("""\
x-imap: &imap {type: imap, server: imap.example.com, port: 993}
pop-client:
  - {<<: *imap, name: agent1, password: "${AGENT1_PASSWORD}"}
  - {<<: *imap, name: agent2, port: 143}
""")
    config = load(path, schema, environ={"AGENT1_PASSWORD": "pw1"})
    agent1, agent2 = config.mailboxes
    assert agent1.get("password").reveal() == "pw1" and agent1.get("port") == 993
    assert agent2.get("port") == 143 and agent2.get("server") == "imap.example.com"


def test_defaults_of_a_place(schema: OptionSchema, tmp_path: Path) -> None:
    mailbox = defaults(schema, Scope.MAILBOX)
    assert mailbox == {"name": None, "type": None, "auth": "basic", "enabled": True,
                       "poll-interval": 60.0, **OAUTH_DEFAULTS, **IDENTITY_DEFAULTS}
    imap = defaults(schema, Scope.MAILBOX, driver="imap")
    assert imap["connect-timeout"] == 30.0 and "folder-path" not in imap
    store = defaults(schema, Scope.STORE, driver="sqlite", base_dir=tmp_path)
    assert store["path"] == tmp_path / "var/postroom.db"
    assert defaults(schema, Scope.GLOBAL, section="logging") == {"level": "info", "format": "text"}
