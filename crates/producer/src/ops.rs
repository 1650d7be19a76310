//! Operator commands: dead-letter queue, pause/resume/drain, worker list.
