"""Hook plugins loaded through entry points by the tests (``tests.hooks.sample_plugins:...``).

They keep no state: whatever they do is written onto the objects the hooks are
given, so the same plugin object can serve several plugin sets (kernels) at once.
"""

from __future__ import annotations

from postroom import hookimpl
from postroom.config.options import OptionSchema
from postroom.model import Interaction, ParsedMessage, Verdict

TRACE = "trace"


def append_trace(interaction: Interaction, name: str) -> None:
    previous = interaction.attached_data.get(TRACE)
    interaction.attached_data[TRACE] = f"{previous},{name}" if previous else name


class TracingPlugin:
    """Appends its name to the attached key ``trace`` and classifies on request:
    a header ``X-<name>-Priority: <n>`` makes it return a verdict of that priority."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def postroom_add_options(self, schema: OptionSchema) -> None:
        schema.add("greeting", "str", section=self.name, default=f"hello from {self.name}",
                   description="An option of a sample plugin.")

    @hookimpl
    def postroom_classify(self, message: ParsedMessage) -> Verdict | None:
        priority = message.header(f"X-{self.name}-Priority")
        if priority is None:
            return None
        return Verdict(f"Sample-{self.name}", priority=int(priority), reason=self.name)

    @hookimpl
    def postroom_enrich(self, interaction: Interaction) -> None:
        append_trace(interaction, self.name)


alpha = TracingPlugin("alpha")
beta = TracingPlugin("beta")
gamma = TracingPlugin("gamma")


class Typo:
    """Implements a hook that does not exist (``postroom_clasify``)."""

    @hookimpl
    def postroom_clasify(self, message: ParsedMessage) -> None:
        return None


typo = Typo()


class UnknownArgument:
    """Implements a real hook with an argument the hook does not have."""

    @hookimpl
    def postroom_enrich(self, interaction: Interaction, mailbox_name: str) -> None:
        return None


unknown_argument = UnknownArgument()


class Declaring(TracingPlugin):
    """A plugin that declares the postroom API version it was written for."""

    def __init__(self, name: str, api: object) -> None:
        super().__init__(name)
        self.POSTROOM_API = api


current_api = Declaring("current_api", "1.0")
future_minor = Declaring("future_minor", "1.99")
next_major = Declaring("next_major", "2.0")
garbled_api = Declaring("garbled_api", "one")
