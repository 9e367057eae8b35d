"""A fake of the OpenRouter API for Ralex's tests (``python -m tests.fake_openrouter``)."""

from tests.fake_openrouter.app import FakeState, Fault, ScriptedReply, create_app, default_catalog

__all__ = ["FakeState", "Fault", "ScriptedReply", "create_app", "default_catalog"]
