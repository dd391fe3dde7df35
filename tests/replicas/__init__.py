"""Two kvkit replicas behind HAProxy: shared limits, rolling restarts, exactly-once writes."""
