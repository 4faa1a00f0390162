//! The CRI log format the kubelet and containerd write and `kubectl logs`
//! expects from a node: one record per line,
//! `<RFC 3339 nanosecond time> <stdout|stderr> <F|P> <content>`, where P
//! marks part of a line longer than a record holds.

use std::time::SystemTime;

/// Longest content of one record; longer lines are split into P records.
pub const MAX_RECORD: usize = 16 * 1024;

/// One record as written.
pub fn encode(at: SystemTime, stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut line = format!(
        "{} {stream} {} ",
        humantime::format_rfc3339_nanos(at),
        if partial { 'P' } else { 'F' }
    )
    .into_bytes();
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: SystemTime,
    /// The time as written, for `--timestamps`.
    pub time_text: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line (without its newline); None for a line not in the
/// format.
pub fn decode(line: &[u8]) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time_text = std::str::from_utf8(fields.next()?).ok()?;
    let stream = std::str::from_utf8(fields.next()?).ok()?;
    let tag = fields.next()?;
    let content = fields.next().unwrap_or_default();
    Some(Record {
        time: humantime::parse_rfc3339(time_text).ok()?,
        time_text,
        stream,
        partial: tag == b"P",
        content,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn records_round_trip() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let line = encode(at, "stderr", false, b"oops: a b");
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "2023-11-14T22:13:20.123456789Z stderr F oops: a b\n"
        );
        let record = decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(record.time, at);
        assert_eq!(record.stream, "stderr");
        assert!(!record.partial);
        assert_eq!(record.content, b"oops: a b");
        assert_eq!(decode(b"not a record"), None);
    }
}
