//! The wide Internet checksum against `smoltcp`'s, which it replaces on
//! the datapath.

use proptest::prelude::*;
use smoltcp::wire::checksum;

#[test]
fn edge_cases_match_smoltcp() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff],
        vec![0, 0, 0],
        vec![0xff; 3],
        vec![0xff; 65_535],
        vec![0xff; 65_536 + 14 + 4],
        (0..=255).collect(),
        vec![0x80, 0x00, 0x80, 0x00, 0x7f],
    ];
    for c in cases {
        assert_eq!(
            vswitch::csum::data(&c),
            checksum::data(&c),
            "{} bytes",
            c.len()
        );
    }
    // Zero only when every byte is zero, as smoltcp.
    assert_eq!(vswitch::csum::data(&[0; 100]), 0);
    assert_eq!(vswitch::csum::data(&[0xff, 0xff]), 0xffff);
}

proptest! {
    #[test]
    fn any_bytes_sum_as_smoltcp_sums_them(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        skip in 0usize..4,
    ) {
        // Unaligned starts too.
        let s = bytes.get(skip..).unwrap_or_default();
        prop_assert_eq!(vswitch::csum::data(s), checksum::data(s));
    }
}
