"""The Agent Interaction Protocol (AIP) as it crosses the wire, without any I/O.

Shared by the gateway (which parses client frames and answers them) and the session
service (which builds the command and task_end frames the gateway forwards).
"""
