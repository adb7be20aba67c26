// The embedded state backend: SQLite in WAL mode, one file <data_dir>/state.db.
//
// Every shard thread gets its own sqlite3 connection from Connect(), with its statements
// prepared once, so the hot path takes no lock of ours; SQLite's file locks (WAL: readers never
// block, one writer at a time, waiting up to 5 s) keep shards consistent with each other.
//
// Durability: a write that returned OK survives a crash of the process (WAL, synchronous=
// NORMAL); with StateBackendOptions::sync_full it also survives a power cut (synchronous=FULL).
//
// Storage: table kv(ns, key, value, expires_at) keyed by (ns, key). Namespaces and keys are
// stored as TEXT with their exact bytes (so the sqlite3 shell can query them), values as BLOB.
#pragma once

#include "wisp/state_store.h"

namespace wisp {

// Registers this backend as "sqlite" in StateBackendRegistry::Get(). Call once at start-up
// (explicitly: a static registrar in a static library would be dropped by the linker).
void RegisterSqliteStateBackend();

// Creates options.data_dir if needed, opens (or creates) state.db in it and checks the schema.
// IoError if the directory or database cannot be opened.
Result<StateBackendPtr> OpenSqliteStateBackend(const StateBackendOptions& options);

}  // namespace wisp
