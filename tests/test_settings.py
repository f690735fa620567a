"""Server options: every Settings field is a typed keyword argument of Server."""

from __future__ import annotations

import typing

import attrs
import pytest

from trioroom import Server, Settings
from trioroom.settings import SettingsOverrides


def test_every_setting_is_a_typed_server_keyword() -> None:
    fields = {field.name for field in attrs.fields(Settings)}
    assert set(typing.get_type_hints(SettingsOverrides)) == fields


def test_keywords_override_single_fields_and_bad_names_are_refused() -> None:
    server = Server(Settings(queue_frames=7), root_notices=False)
    assert server.settings.queue_frames == 7
    assert server.settings.root_notices is False
    with pytest.raises(TypeError):
        Server(no_such_setting=1)  # type: ignore[call-arg]
