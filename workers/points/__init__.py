"""The tag dimension: PI points with history (`pi_points`) and digital state sets."""
