"""The producer API: hand user messages to the worker (contract section 1), read the
replies it publishes with a consumer group, and follow a reply as it is written through its
conversation's deltas (contract section 2)."""

from producers.client import Producer, SendResult, cancel_conversation, send_user_message
from producers.deltas import DeltaReader, delta_position, follow_deltas  # its items: producers.deltas
from producers.replies import Gap, Reply, ReplyReader
from worker.events import InvalidEvent

__all__ = ["DeltaReader", "Gap", "InvalidEvent", "Producer", "Reply", "ReplyReader", "SendResult",
           "cancel_conversation", "delta_position", "follow_deltas", "send_user_message"]
