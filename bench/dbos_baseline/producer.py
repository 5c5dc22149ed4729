"""The bench's side of the baseline: a user message enqueued as a workflow with `DBOSClient`, as
a DBOS app's backend sends one (the event id the workflow id, the conversation the partition)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.dbos_baseline.names import QUEUE, WORKFLOW


class DbosProducer:
    """`send_user_message(conversation_id, content) -> event_id`, as producers.Producer's."""

    def __init__(self, database_url: str) -> None:
        from dbos import DBOSClient

        self.client = DBOSClient(system_database_url=database_url)

    def send_user_message(self, conversation_id: str, content: str, event_id: str | None = None,
                          **_: Any) -> str:
        event_id = event_id or str(uuid.uuid4())
        self.client.enqueue({"workflow_name": WORKFLOW, "queue_name": QUEUE, "workflow_id": event_id,
                             "queue_partition_key": conversation_id}, conversation_id, content, time.time())
        return event_id

    def close(self) -> None:
        self.client.destroy()
