"""`python -m wenlan_cli ...` (what torchrun launches) is the `wenlan` command."""

from .cli import run

if __name__ == "__main__":
    run()
