"""Developer tools that work on the repository itself (not shipped in any distribution)."""
