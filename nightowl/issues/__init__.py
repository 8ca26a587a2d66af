"""
Issues: what the drain makes of exceptions and of records slower than their
threshold, and what people do with them.

``thresholds``  the threshold table, its reload, and the pure per-payload
                aggregation of slow records into performance groups;
``upsert``      the issue statements inside the drain's batch transaction
                (counts, users, lifecycle events, activity, alert outbox);
``lifecycle``   status changes by people (CLI, dashboard): ``set_status``.
"""
