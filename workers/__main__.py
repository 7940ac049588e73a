"""``python -m workers``: the ``letterpress`` command."""

from workers.edge import main

main()
