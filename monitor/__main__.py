"""`python -m monitor` runs the newsmon CLI."""

from monitor.cli import main

main()
