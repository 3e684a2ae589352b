//! The invocation tracker: per request id, what the platform said about it (start, runtimeDone,
//! report), plus init and restore reports and cold start.
