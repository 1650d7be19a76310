//! `/metrics` HTTP endpoint.
