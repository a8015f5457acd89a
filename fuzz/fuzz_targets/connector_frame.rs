//! The host connector's frame input: what a container sends to the
//! gateway for beyond it, through the connector's own parsing (MSS
//! rewrite, RST answer, offload header) and its userspace TCP endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vswitch::connector::fuzz_frame(data);
});
