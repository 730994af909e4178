//! End-to-end tests: real files through a real Mosquitto.

mod broker;
mod tls;
mod transfer;
