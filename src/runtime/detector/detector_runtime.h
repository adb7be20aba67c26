// The "detector" runtime: a function with no code of its own. Each event's number (or vector)
// goes through an anomaly detector kept per key in the state store (detect/keyed_detectors.h);
// the reply is {"key", "score", "anomaly"}, and flagged events (all, with emit_all) are emitted
// as an action to the manifest's `emit` topic. Configured by the manifest's `detector:` block
// (DetectorFunctionSpec; docs/manifest.md).
//
// Failures: CreateInstance gives NotFound / InvalidArgument for an unknown algorithm or bad
// parameters (so a deploy with them fails). Invoke gives InvalidArgument when the event has no
// number where `value` points, or no key where `key` points; IoError when the store fails.
//
// Threads: the Runtime is stateless and thread-safe; an Instance belongs to one shard thread.
#pragma once

namespace wisp {

// Registers "detector" in the RuntimeRegistry.
void RegisterDetectorRuntime();

}  // namespace wisp
