//! Where the agent reads its publication from (DESIGN §3 step 1): `sftp://user@host:port/` over
//! ssh2 with a pinned host key, or `file:///path` with the same layout on a local disk.
//!
//! Knows the publication layout (current, gens/N, logs/) but nothing of builds or systems.
