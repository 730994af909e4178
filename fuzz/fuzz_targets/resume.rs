//! A receiver restarted from an arbitrary saved state.
//! The checks live in the library: `mqft_fuzz::resume::run`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mqft_fuzz::resume::run(data);
});
