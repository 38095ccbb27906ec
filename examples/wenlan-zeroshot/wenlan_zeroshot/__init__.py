"""wenlan-zeroshot: an example task plugin for wenlan.

It adds one command, `wenlan zeroshot-accuracy`, through the task hook (`task.py`) and
uses nothing of wenlan but `wenlan_cli.plugin_api`: the smallest complete plugin, to copy
when writing a new task. `accuracy` holds the library function, `commands` the command.
"""

__version__ = "0.1.0"
