//! loupe-local: a local Lambda for one execution environment. It serves the Runtime, Extensions,
//! Telemetry and Logs APIs on 127.0.0.1, runs a runtime command and every extension beside it,
//! and reports what happened. Used by the demo and the tests; never part of the layer.
