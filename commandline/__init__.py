"""What every command-line entry point shares: argparse value types and the one error type
that ends a command with a one-line reason and a non-zero exit status."""
