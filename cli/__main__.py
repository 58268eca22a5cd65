"""``python -m cli``: the same command line as ``exp`` (what ``exp run`` records for ``exp resume``)."""

from cli.main import main

if __name__ == "__main__":
    main()
