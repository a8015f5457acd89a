//! vswitch core.
