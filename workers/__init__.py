"""pidelta workers: the stages between the PI Web API and the Delta tables."""
