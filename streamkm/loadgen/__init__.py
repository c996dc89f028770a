"""Load generation: synthetic sources, the recording format, the producer."""
