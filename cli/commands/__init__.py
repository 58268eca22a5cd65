"""One module per ``exp`` command; each defines a click command named like its module."""
