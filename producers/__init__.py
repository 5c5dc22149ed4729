"""The producer API: hand user messages to the worker (contract section 1), and read the
replies it publishes with a consumer group (contract section 2)."""

from producers.client import Producer, SendResult, cancel_conversation, send_user_message
from producers.replies import Gap, Reply, ReplyReader
from worker.events import InvalidEvent

__all__ = ["Gap", "InvalidEvent", "Producer", "Reply", "ReplyReader", "SendResult", "cancel_conversation",
           "send_user_message"]
