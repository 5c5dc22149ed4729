"""Runs followed by their event stream instead of polls (docs/contract.md, "Streaming").

One asyncio loop per worker process (`loop.py`) reads every stream the process opened
(`reader.py`); a step hands it the call that opens a stream and waits only for the run's id
(`streams.py`). What a stream brings is written to the conversation's delta stream, fenced
by the stream's owner as the batch records it; a state the worker acts on (tool calls, an
ending) is stored with the batch for the next step, due at once (`conversation/streamed.py`).
"""
