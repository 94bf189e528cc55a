"""pidelta service: settings, command line, process lifecycle, metrics and health."""
