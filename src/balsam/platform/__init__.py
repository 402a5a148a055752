"""Machine adapters: node discovery, MPI launch builders, batch schedulers, transfers.

Nothing here knows about the workflow database: the launcher and the CLI pass in what the
adapters need (host lists, settings values, paths) and get commands and host lists back.
"""
