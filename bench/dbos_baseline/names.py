"""Names the baseline's processes and the bench share (no dbos import: the bench imports these)."""

QUEUE = "chat"
WORKFLOW = "answer"
THREADS = "dbos:threads"  # conversation id -> thread id, the chat app's own table
READY = "dbos:ready:"  # + executor id: set once the process listens to the queue
