"""``ralex-proxy``'s entry point, light to import.

The proxy spawns a worker process to read large bodies (:class:`ralex.body.BodyReader`), and a spawned
process imports the program's main module again: the console script, which imports this module. The
launcher and everything it needs are imported only when the program runs.
"""

from __future__ import annotations


def main() -> None:
    from ralex.proxy.launch import main as launch

    launch()
