"""The DBOS baseline: what a DBOS user would write instead of the worker (issue 16).

One async workflow per user message on a DBOS queue partitioned by conversation
(`partition_concurrency=1`: a conversation's messages run one at a time, in send order), each
API call a step, `DBOS.sleep_async` between polls, the event id as the workflow id (the
idempotency key), the openai SDK's retries at their default, one stable executor id per
process. It talks to the same emulator and publishes the worker's outbound entries to the same
Redis stream. `app` is the process, `producer` the bench's side (enqueueing with `DBOSClient`),
`database` the scratch PostgreSQL database, `stack` the processes under test.
"""
