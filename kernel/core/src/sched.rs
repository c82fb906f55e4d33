//! The time-partitioning model (see docs/scheduling-and-health.md).
