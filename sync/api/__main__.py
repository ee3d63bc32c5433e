"""``python -m audiencesync``: the ``audience-sync`` command."""

from audiencesync.sync.cli.commands import cli

if __name__ == "__main__":
    # The program name the help and usage lines show is the installed command's.
    cli(prog_name="audience-sync")
