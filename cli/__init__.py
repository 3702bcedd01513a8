"""The `balancer` command line: pipeline commands (run, demo) and service commands."""
