"""The middle of the daemon: models, states, the durable pipeline, the work queue and the scheduler."""
