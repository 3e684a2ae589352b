//! The platform edge: the Extensions API client (register, /event/next, error reports), the
//! Telemetry and Logs API subscription, the telemetry listener, and the event types it decodes.
