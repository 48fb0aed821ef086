//! Integration and compile-fail tests for eventdriven live in `tests/`; this library is empty.
