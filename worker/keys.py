"""Every Redis key and queue name the project uses, in one place."""

PREFIX = "aw:"

# The schedule of conversations to advance: member conversation_id, score due time (epoch s).
SCHEDULE = PREFIX + "schedule"
# Wakes a sleeping scheduler when something became due now (at most one element).
WAKE = PREFIX + "wake"
# Dramatiq's Redis broker keeps a queue's waiting message ids in this list (KEDA scales on it).
DRAMATIQ_NAMESPACE = "dramatiq"
# Rejected raw events with their reason (a Redis Stream).
DEAD_LETTERS = PREFIX + "deadletter"
# The fleet's recent run phase durations in seconds, newest first (a capped list): a worker
# process that starts plans its polls from them instead of backing off blindly.
PHASE_DURATIONS = PREFIX + "poll:phases"


def dedup(event_id: str) -> str:
    """Marks an accepted event id (value: its conversation id) for EVENT_DEDUP_TTL_SECONDS."""
    return f"{PREFIX}event:{event_id}"


def inbox(conversation_id: str) -> str:
    """Events waiting for a run, in send order (a list of JSON objects)."""
    return f"{PREFIX}inbox:{conversation_id}"


def conversation(conversation_id: str) -> str:
    """The conversation's lasting state: its thread id and last published run (a hash)."""
    return f"{PREFIX}conv:{conversation_id}"


def batch(conversation_id: str) -> str:
    """The active batch of a conversation (a hash); absent when idle."""
    return f"{PREFIX}batch:{conversation_id}"


def batch_data(conversation_id: str) -> str:
    """The rest of the active batch, one compact JSON document (a string beside the small
    hash, so that the hash keeps Redis's compact encoding)."""
    return f"{PREFIX}batchdata:{conversation_id}"


def tools_claim(conversation_id: str, key: str) -> str:
    """Held while one requires_action step's tools run and are submitted (key: run and
    call ids): "1", expiring after TOOL_TIMEOUT_SECONDS + 10 s so that a dead worker's tools
    run again; or the outputs (JSON) whose submission failed, for RUN_TIMEOUT_SECONDS, so
    that they are submitted again without running the tools again."""
    return f"{PREFIX}tools:{conversation_id}:{key}"


def lock(conversation_id: str) -> str:
    """Short lease serialising the steps of one conversation."""
    return f"{PREFIX}lock:{conversation_id}"


def cancel_request(conversation_id: str) -> str:
    """Set by cancel_conversation: the time of the request."""
    return f"{PREFIX}cancel:{conversation_id}"


def dramatiq_queue(queue_name: str) -> str:
    """Dramatiq's list of messages waiting on `queue_name` (its Redis broker's layout)."""
    return f"{DRAMATIQ_NAMESPACE}:{queue_name}"


def capability(base_url: str, name: str) -> str:
    """What the fleet learnt about one capability of the API at `base_url` (JSON: value,
    reason, time), expiring after CAPABILITY_TTL_SECONDS."""
    return f"{PREFIX}capability:{base_url}:{name}"


def late_copies(conversation_id: str) -> str:
    """The conversation's watches for a late copy of an answered batch's input (JSON list),
    expiring a while after the last one ends (worker/conversation/late_copies.py)."""
    return f"{PREFIX}latecopy:{conversation_id}"


def delta_lengths(conversation_id: str) -> str:
    """Per message of the active batch's run, the bytes of its text published to the
    conversation's delta stream (a hash, deleted with the batch): what a catch-up delta
    leaves out."""
    return f"{PREFIX}deltalen:{conversation_id}"


def streamer(process_id: str) -> str:
    """A worker process's heartbeat while its stream loop runs (worker/streams/): the streams
    it owns are taken over once it expires."""
    return f"{PREFIX}streamer:{process_id}"


# The processes that read run streams: member process id, score its last heartbeat (epoch s).
STREAMERS = PREFIX + "streamers"


def owned_streams(process_id: str) -> str:
    """The conversations whose run streams a process reads (a set): made due at once when it
    stops beating, so that their streams are taken over without waiting for a safety poll."""
    return f"{PREFIX}streams:{process_id}"
