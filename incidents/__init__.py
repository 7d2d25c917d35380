"""Incidents: the alert firehose grouped into what an analyst works with, and the analysts' verdicts.

Data flows one way: detector -> alert topic -> this service -> incident topic (compacted), with verdicts
coming back on the feedback topic. ``book.py`` is the grouping and muting logic (pure), ``service.py`` the
Kafka loop (exactly-once), ``feedback.py`` the analysts' command.
"""
