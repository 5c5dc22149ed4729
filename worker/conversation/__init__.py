"""One conversation's state machine, one module per phase (see service.py for the loop).

- `opening`: the next batch from the inbox head;
- `starting` (Phase.STARTING): create the run, or adopt the one a lost answer left;
- `following` (Phase.RUNNING): poll the run until it needs the worker;
- `tool_round`: dispatch a run's tool calls, run them, submit their outputs;
- `endings`: answer the batch (finished, cancelled, timed out, failed, rejected);
- `stopping` (Phase.STOPPING): wait for an answered batch's run to stop, then release;
- `reconcile`: when an earlier create may have gone through;
- `transitions`: what a phase returns; `service` applies it.
"""
