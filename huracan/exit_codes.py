"""Exit statuses of the `huracan` command (sysexits.h), in one place for the CLI, the daemon,
the systemd unit (RestartPreventExitStatus=78) and the tests."""

EX_OK = 0
EX_USAGE = 64  # wrong command-line use (argparse itself exits 2 on unknown arguments)
EX_UNAVAILABLE = 69  # a dependency (the database) is unavailable, or a command is not built yet
EX_SOFTWARE = 70  # the daemon stopped on a fatal error
EX_CONFIG = 78  # invalid configuration: restarting cannot help
