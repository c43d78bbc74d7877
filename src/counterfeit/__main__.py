"""`python -m counterfeit ...` (also what `torchrun -m counterfeit ...` runs on every rank)."""

from counterfeit.cli import main

main()
