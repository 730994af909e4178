//! mqft's integration tests, compiled into one binary (ripgrep style): one
//! module per area, all sharing the harness in the `mqft_tests` library and
//! the library helpers in `util`.
//!
//! They start real `mosquitto` brokers on `127.0.0.1`; `scripts/test`
//! installs mosquitto when it is missing. The `cli` tests run the `mqft`
//! binary, which must be built first (`cargo build -p mqft-cli`; `scripts/test`
//! does).

mod autosize;
mod bounded;
mod cli;
mod constrained;
mod early;
mod fault_util;
mod faults;
mod faults_net;
mod flags;
mod flood;
mod harness;
mod hold;
mod hostile;
mod integrity;
mod links;
mod many;
mod names;
mod nudge;
mod pool;
mod raw;
mod receivers;
mod secrets;
mod send_concurrency;
mod service;
mod sizes;
mod stall;
mod state;
mod stdio;
mod targets;
mod tls;
mod transfer;
mod trust;
mod util;
