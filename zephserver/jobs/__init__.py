"""The job core: one model for batch jobs, interactive sessions and the agent's processes.

- ``transition``: the one function that changes a job's state (check, stamp, persist,
  log, publish);
- ``waiting``: the waiting queue (QUEUED and HELD jobs in order);
- ``executor``: where processes run (``LocalExecutor``: this node, by the keeper or
  under the shim);
- ``launches``: a batch the queue chose given to its executor, and each start recorded;
- ``feed``: subscriptions, ``job.updated`` and ``job.output``;
- ``interactive``: what sessions add (ports, secrets, readiness, the proxy map);
- ``progress``: a running job's parser fed from its log;
- ``batches``: the job manager's actor, each inbox batch one database transaction;
- ``api`` and ``interactive_api``: what tasks and the REST faces call.

The job manager service (``zephserver.service.job_manager``) ties them together on its
actor thread; the agent (``zephserver.service.agent``) uses the same transition and feed.
"""
