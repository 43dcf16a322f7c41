"""Example actors built on actorkv's EventSourcedActor (exercised by the test suite)."""
