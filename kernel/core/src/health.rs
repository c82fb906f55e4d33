//! The health monitor model (see docs/scheduling-and-health.md).
