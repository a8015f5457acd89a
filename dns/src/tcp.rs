//! DNS over TCP framing (RFC 1035 §4.2.2): each message is preceded by its
//! length as two bytes, big-endian. Sans-IO: bytes read from a stream go in,
//! whole messages come out, and a message goes out with its prefix.

/// The largest message a two-byte prefix can announce.
pub const MAX_MESSAGE: usize = u16::MAX as usize;

/// Takes one length-prefixed message off the front of `input`, if it is all
/// there; a partial message stays for the next read.
pub fn take_frame(input: &mut Vec<u8>) -> Option<Vec<u8>> {
    let (head, rest) = input.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*head));
    let message = rest.get(..len)?.to_vec();
    input.drain(..len + 2);
    Some(message)
}

/// Appends `message` with its length prefix to `output`, unless that would
/// take `output` past `limit` bytes or the message is longer than a prefix
/// can say. Returns whether it was appended.
pub fn push_frame(output: &mut Vec<u8>, message: &[u8], limit: usize) -> bool {
    let Ok(len) = u16::try_from(message.len()) else {
        return false;
    };
    if output.len() + message.len() + 2 > limit {
        return false;
    }
    output.extend_from_slice(&len.to_be_bytes());
    output.extend_from_slice(message);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole() {
        let mut input = vec![0, 3, 1, 2];
        assert_eq!(take_frame(&mut input), None);
        input.extend_from_slice(&[3, 0, 0]);
        assert_eq!(take_frame(&mut input), Some(vec![1, 2, 3]));
        assert_eq!(take_frame(&mut input), Some(vec![]));
        assert_eq!(take_frame(&mut input), None);
        assert!(input.is_empty());
        let mut one = vec![7];
        assert_eq!(take_frame(&mut one), None);
        assert_eq!(one, [7]);
    }

    #[test]
    fn frames_pushed_are_taken_back_and_limits_hold() {
        let mut out = Vec::new();
        assert!(push_frame(&mut out, b"abc", 16));
        assert!(!push_frame(&mut out, &[0; 12], 16));
        assert!(!push_frame(&mut out, &vec![0; MAX_MESSAGE + 1], usize::MAX));
        assert_eq!(take_frame(&mut out), Some(b"abc".to_vec()));
        assert!(out.is_empty());
    }
}
