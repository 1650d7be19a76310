//! Operator actions on the queue (filled in by the operations work).
