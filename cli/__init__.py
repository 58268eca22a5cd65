"""The ``exp`` command line: parsing and printing only; the logic lives in ``experiment``."""
