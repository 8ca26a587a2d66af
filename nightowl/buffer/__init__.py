"""
The SQLite buffer: every payload is committed here before its ack, and the
drain takes it from here.  One module per job:

* L{nightowl.buffer.schema}: the file's layout, pragmas, opening and checks
* L{nightowl.buffer.states}: the named row states and the SQL that moves rows
* L{nightowl.buffer.writer}: BufferWriter, the service owning the file
* L{nightowl.buffer.groupcommit}: its writer thread (group commit)
* L{nightowl.buffer.checkpoint}: WAL checkpoints, rewinds, freed pages
* L{nightowl.buffer.reader}: read-only access (workers, probes, admin tools)
* L{nightowl.buffer.lock}: one owner per file (flock)

Import from the module that owns a name.  This package imports nothing
itself, so a drain worker reading the buffer loads no Twisted.
"""
