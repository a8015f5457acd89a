//! Messages in and out, through hickory-proto.
//!
//! Local replies follow miekg/dns's `SetReply` as Docker uses it: id,
//! opcode and the question copied; RD and CD copied for standard queries;
//! RA set; AA never set; no OPT record even when the query had one; names
//! written uncompressed (miekg's default), which the truncation sizes of
//! docker-reference §6.5 depend on.

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::NameEncoding;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::resolver::Transport;

/// The DNS header length: anything shorter gets no reply.
pub(crate) const HEADER_LEN: usize = 12;
/// The TTL of every local record (Docker's `respTTL`).
pub(crate) const TTL: u32 = 600;
/// The UDP reply limit without EDNS, and the floor of the EDNS one.
pub(crate) const UDP_LIMIT: usize = 512;
/// The TCP reply limit (Docker: `dns.MaxMsgSize - 1`).
pub(crate) const TCP_LIMIT: usize = 65534;

/// A query message, or why there is none.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A message hickory could read (QR and the question are not checked
    /// yet).
    Message(Box<Message>),
    /// Shorter than a header: drop.
    Runt,
    /// Unreadable past the header: this FORMERR is the reply, or `None`
    /// if even that could not be encoded.
    FormErr(Option<Vec<u8>>),
}

/// Parses a query.
pub(crate) fn parse_query(bytes: &[u8]) -> Parsed {
    if bytes.len() < HEADER_LEN {
        return Parsed::Runt;
    }
    match Message::from_vec(bytes) {
        Ok(m) => Parsed::Message(Box::new(m)),
        Err(_) => Parsed::FormErr(formerr(bytes)),
    }
}

/// miekg/dns's answer to a query it cannot unpack: `SetRcodeFormatError`
/// on what it did read, i.e. id and opcode, RD and CD for a standard
/// query, the first question if it was readable, QR set, nothing else.
fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let mut reply = Message::new(header.id, MessageType::Response, header.op_code);
    if header.op_code == OpCode::Query {
        reply.metadata.recursion_desired = header.recursion_desired;
        reply.metadata.checking_disabled = header.checking_disabled;
    }
    reply.metadata.response_code = ResponseCode::FormErr;
    if header.counts.queries > 0
        && let Ok(q) = Query::read(&mut decoder)
    {
        reply.queries.push(q);
    }
    reply.to_vec().ok()
}

/// The largest local reply the client accepts (docker-reference §6.5):
/// over UDP the client's EDNS payload size, but never less than 512; over
/// TCP 65534.
pub(crate) fn reply_limit(query: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => TCP_LIMIT,
        Transport::Udp => query
            .edns
            .as_ref()
            .map_or(UDP_LIMIT, |e| usize::from(e.max_payload()).max(UDP_LIMIT)),
    }
}

/// Builds a local reply with `answers` (already shuffled), rcode NOERROR.
///
/// If the reply is longer than `limit`, answers are dropped from the end
/// until it fits; over UDP TC is then set (Docker's `truncateResp`, which
/// also trims silently over TCP).
pub(crate) fn local_reply(
    query: &Message,
    mut answers: Vec<Record>,
    limit: usize,
    transport: Transport,
) -> Option<Vec<u8>> {
    let mut reply = Message::new(query.id, MessageType::Response, query.op_code);
    if query.op_code == OpCode::Query {
        reply.metadata.recursion_desired = query.recursion_desired;
        reply.metadata.checking_disabled = query.checking_disabled;
    }
    reply.metadata.recursion_available = true;
    reply.queries.extend(query.queries.first().cloned());

    // Uncompressed, each record's size does not depend on the others, so
    // the longest prefix that fits is found by adding sizes once.
    let mut len = encode(&reply)?.len();
    let mut keep = 0;
    for record in &answers {
        let size = encoded_len(record)?;
        if len + size > limit {
            break;
        }
        len += size;
        keep += 1;
    }
    if keep < answers.len() {
        answers.truncate(keep);
        reply.metadata.truncation = transport == Transport::Udp;
    }
    reply.answers = answers;
    encode(&reply)
}

/// Encodes without name compression.
fn encode(message: &Message) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(UDP_LIMIT);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    message.emit(&mut encoder).ok()?;
    Some(buf)
}

fn encoded_len(record: &Record) -> Option<usize> {
    let mut buf = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    record.emit(&mut encoder).ok()?;
    Some(buf.len())
}

/// A SERVFAIL for `query`: its id, opcode, RD and CD, and its first
/// question.
pub(crate) fn servfail(query: &Message) -> Option<Vec<u8>> {
    let mut reply = Message::new(query.id, MessageType::Response, query.op_code);
    if query.op_code == OpCode::Query {
        reply.metadata.recursion_desired = query.recursion_desired;
        reply.metadata.checking_disabled = query.checking_disabled;
    }
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = ResponseCode::ServFail;
    reply.queries.extend(query.queries.first().cloned());
    encode(&reply)
}

/// [`servfail`] for a query kept as bytes (it was parsed when it arrived).
pub(crate) fn servfail_bytes(query: &[u8]) -> Option<Vec<u8>> {
    Message::from_vec(query).ok().and_then(|m| servfail(&m))
}

/// The transaction id of a message, if it has one.
pub(crate) fn id_of(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// A copy of `bytes` with the transaction id replaced. Everything else is
/// left as it was: the query goes upstream unchanged (EDNS included), the
/// upstream's reply comes back unchanged.
pub(crate) fn with_id(bytes: &[u8], id: u16) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(head) = out.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
    out
}

/// What to do with one upstream reply (docker-reference §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// NOERROR, or authoritative NXDOMAIN: relay it now.
    Relay,
    /// SERVFAIL, REFUSED, non-authoritative NXDOMAIN, any other rcode:
    /// keep it as the last reply and try the next upstream.
    Next,
    /// Not a DNS message: as if nothing came back (the last reply is
    /// cleared), try the next upstream.
    Garbage,
}

/// Judges an upstream reply.
///
/// A reply hickory cannot fully read but whose header has TC set is
/// judged on its header alone, so a UDP reply cut short is still passed on
/// and the client retries over TCP, as Docker does.
pub(crate) fn judge_upstream(bytes: &[u8]) -> Verdict {
    let (rcode, authoritative) = match Message::from_vec(bytes) {
        Ok(m) => (m.response_code, m.authoritative),
        Err(_) => {
            let mut decoder = BinDecoder::new(bytes);
            match Header::read(&mut decoder) {
                Ok(h) if h.truncation => (h.response_code, h.authoritative),
                _ => return Verdict::Garbage,
            }
        }
    };
    match rcode {
        ResponseCode::NoError => Verdict::Relay,
        ResponseCode::NXDomain if authoritative => Verdict::Relay,
        _ => Verdict::Next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Edns;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, RecordType};

    fn query(name: &str, edns: Option<u16>) -> Message {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m
    }

    #[test]
    fn limits() {
        assert_eq!(reply_limit(&query("a.", None), Transport::Udp), 512);
        assert_eq!(reply_limit(&query("a.", Some(256)), Transport::Udp), 512);
        assert_eq!(reply_limit(&query("a.", Some(4096)), Transport::Udp), 4096);
        assert_eq!(reply_limit(&query("a.", Some(4096)), Transport::Tcp), 65534);
    }

    #[test]
    fn reply_is_uncompressed_and_truncated_from_the_end() {
        let q = query("many.", None);
        let answers: Vec<Record> = (0..26u8)
            .map(|i| {
                Record::from_rdata(
                    q.queries[0].name().clone(),
                    TTL,
                    RData::A(A::new(10, 0, 0, i)),
                )
            })
            .collect();
        let bytes = local_reply(&q, answers.clone(), 512, Transport::Udp).unwrap();
        assert_eq!(bytes.len(), 502);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.truncation);
        assert_eq!(m.answers, answers[..24]);

        let bytes = local_reply(&q, answers.clone(), 200, Transport::Tcp).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert!(!m.truncation, "Docker trims over TCP without TC");
        assert_eq!(m.answers.len(), 8);
    }

    #[test]
    fn formerr_copies_id_opcode_rd_and_readable_question() {
        let mut bytes = query("x.", None).to_vec().unwrap();
        // Claim one answer record that is not there.
        bytes[7] = 1;
        let Parsed::FormErr(Some(reply)) = parse_query(&bytes) else {
            panic!("expected FORMERR");
        };
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.id, 7);
        assert_eq!(m.response_code, ResponseCode::FormErr);
        assert_eq!(m.message_type, MessageType::Response);
        assert!(m.recursion_desired);
        assert!(!m.recursion_available);
        assert_eq!(m.queries.len(), 1);
        assert!(m.answers.is_empty() && m.edns.is_none());
    }

    #[test]
    fn ids_are_rewritten_in_place() {
        assert_eq!(id_of(&[0x12, 0x34, 0]), Some(0x1234));
        assert_eq!(id_of(&[0x12]), None);
        assert_eq!(with_id(&[0, 0, 9], 0xabcd), [0xab, 0xcd, 9]);
        assert_eq!(with_id(&[1], 0xabcd), [1]);
    }

    #[test]
    fn upstream_verdicts() {
        let mut r = query("x.", None);
        r.metadata.message_type = MessageType::Response;
        let judge = |code: ResponseCode, aa: bool| {
            let mut r = r.clone();
            r.metadata.response_code = code;
            r.metadata.authoritative = aa;
            judge_upstream(&r.to_vec().unwrap())
        };
        assert_eq!(judge(ResponseCode::NoError, false), Verdict::Relay);
        assert_eq!(judge(ResponseCode::NXDomain, true), Verdict::Relay);
        assert_eq!(judge(ResponseCode::NXDomain, false), Verdict::Next);
        assert_eq!(judge(ResponseCode::ServFail, false), Verdict::Next);
        assert_eq!(judge(ResponseCode::Refused, false), Verdict::Next);
        assert_eq!(judge(ResponseCode::FormErr, false), Verdict::Next);
        assert_eq!(judge(ResponseCode::NotImp, true), Verdict::Next);
        assert_eq!(judge_upstream(&[1, 2, 3]), Verdict::Garbage);

        // Cut short: unreadable, but TC is set, so it is judged and relayed.
        let mut cut = r.to_vec().unwrap();
        cut[2] |= 0x02;
        cut[7] = 3;
        assert_eq!(judge_upstream(&cut), Verdict::Relay);
        cut[2] &= !0x02;
        assert_eq!(judge_upstream(&cut), Verdict::Garbage);
    }
}
