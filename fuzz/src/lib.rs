//! The bodies of the fuzz targets in `fuzz_targets/`, kept in a library so that the
//! seed generator (`examples/seeds.rs`) and `examples/replay.rs` (an input through
//! a target on stable, without libFuzzer, traced with `MQFT_FUZZ_TRACE=1`) run the
//! same code.
//!
//! Each target takes arbitrary bytes and must never panic. Besides not crashing,
//! each one asserts what must always hold for the input it was given: a decoder's
//! output re-encodes to the very bytes it was decoded from, a receiver's
//! writes stay inside the file and it reports the file verified only when the bytes
//! it handed out really hash to the manifest's SHA-256, a sender never runs past
//! the credit its receivers granted, and so on. A failed assertion is a crash that
//! libFuzzer saves as a reproducer, exactly like a panic inside `mqft-proto`.
//!
//! # Layout
//! - [`input`]: the byte format the structured targets read, with an encoder for
//!   the seed generator.
//! - [`fixtures`]: the fixed files and manifests the state machines are built from.
//! - [`decoders`]: one function per wire decoder.
//! - [`receiver`] and [`sender`]: a state machine driven by a sequence of messages,
//!   timer ticks and commands; [`resume`]: a receiver restarted from saved state.
//! - [`stream_receiver`]: a receiver of a stream (protocol version 6), whose
//!   size comes at its end, fed honest and lying chunks and ends.
//! - [`receiver_endpoint`]: the endpoint that routes a receiver's messages by
//!   topic, fed arbitrary (topic, payload) sequences and the runtime's answers.
//! - [`seeds`]: the seed corpus, built from real encodings.

#![forbid(unsafe_code)]

pub mod decoders;
pub mod fixtures;
pub mod input;
pub mod receiver;
pub mod receiver_endpoint;
pub mod resume;
pub mod seeds;
pub mod sender;
pub mod stream_receiver;

/// True when the environment variable `MQFT_FUZZ_TRACE` is set: the state-machine
/// harnesses then print each step and what came out of it, to read a reproducer.
pub fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("MQFT_FUZZ_TRACE").is_some())
}

/// Prints a line when [`tracing`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::tracing() {
            eprintln!($($arg)*);
        }
    };
}
