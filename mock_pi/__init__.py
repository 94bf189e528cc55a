"""mock_pi: a PI Web API simulator with deterministic data, limits and faults."""
