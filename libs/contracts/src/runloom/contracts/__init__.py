"""Runloom wire contracts: the single Python source of every event, command, job and subject."""
