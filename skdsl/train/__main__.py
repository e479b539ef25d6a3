"""`python -m skdsl.train train|eval ...`: the training commands on their own (for torchrun:
`torchrun --nproc_per_node 2 -m skdsl.train train SPEC ...`)."""

import sys

from ..commands.program import main, training_parser

if __name__ == "__main__":
    sys.exit(main(None, training_parser))
