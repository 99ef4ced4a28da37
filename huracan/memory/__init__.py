"""The daemon's memory: the private PostgreSQL cluster, connections, migrations and repositories.

Import from the submodules (`huracan.memory.cluster`, `.database`, `.migrate`); this package
re-exports nothing so that importing it never pulls in asyncpg or starts anything.
"""
