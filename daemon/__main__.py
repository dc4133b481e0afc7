"""`python -m daemon` is `frontline`."""

from daemon.cli import main

main()
