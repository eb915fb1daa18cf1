"""The streamedge command line."""
