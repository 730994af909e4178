//! mqft's integration tests, compiled into one binary (ripgrep style): one
//! module per area, all sharing the harness in the `mqft_tests` library.
//!
//! They start real `mosquitto` brokers on `127.0.0.1`; `scripts/test`
//! installs mosquitto when it is missing.

mod constrained;
mod harness;
