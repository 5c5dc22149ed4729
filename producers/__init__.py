"""The producer API: hand user messages to the worker (contract section 1)."""

from producers.client import Producer, cancel_conversation, send_user_message
from worker.events import InvalidEvent

__all__ = ["InvalidEvent", "Producer", "cancel_conversation", "send_user_message"]
