"""The conversation store in Redis, split by concern:

- `inbox`: the producer side (accept an event, request a cancel);
- `schedule`: due conversations, claims, the step's lease;
- `batches`: the active batch and what lasts beyond it;
- `claims`: tool rounds claimed, outputs kept;
- `outbound`: answers, rejections, dead letters;
- `history`: the fleet's run phase durations.

Writes that must not interleave with a producer or another worker are Lua scripts
(`lua/*.lua`, one atomic operation each; `scripts` calls them by name). `Store` (in
`worker.store.conversation_store`) bundles them for the worker. This module imports nothing, so that
`producers` can use `inbox` alone.
"""
