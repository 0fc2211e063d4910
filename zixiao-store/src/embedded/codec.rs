//! The byte layouts the embedded store keeps in redb: a key's record
//! (revisions, lease, value) and a revision's changelog entry (its events).
//!
//! Layouts are fixed and little-endian. Decoding checks every length, so a
//! truncated or garbage value is a [`CodecError`], never a panic.

use zixiao_core::store::{KeyValue, LeaseId, Revision, WatchEvent};

/// Why stored bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CodecError(&'static str);

impl CodecError {
    pub(crate) fn new(what: &'static str) -> CodecError {
        CodecError(what)
    }
}

/// What the `kv` table holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub(crate) create_revision: Revision,
    pub(crate) mod_revision: Revision,
    pub(crate) lease: Option<LeaseId>,
    pub(crate) value: Vec<u8>,
}

impl KeyRecord {
    /// `create_revision`, `mod_revision`, lease (0: none), then the value.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.value.len());
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.mod_revision.to_le_bytes());
        out.extend_from_slice(&self.lease.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<KeyRecord, CodecError> {
        let mut reader = Reader { bytes };
        let create_revision = reader.u64()?;
        let mod_revision = reader.u64()?;
        let lease = reader.u64()?;
        if create_revision == 0 || mod_revision < create_revision {
            return Err(CodecError("key record has impossible revisions"));
        }
        Ok(KeyRecord {
            create_revision,
            mod_revision,
            lease: (lease != 0).then_some(lease),
            value: reader.bytes.to_vec(),
        })
    }

    pub(crate) fn into_key_value(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// Encodes the events of one revision: a count, then each event. The
/// revision itself is the changelog key, so it is not repeated here.
pub(crate) fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u64(&mut out, events.len() as u64);
    for event in events {
        match event {
            WatchEvent::Put(kv) => {
                out.push(TAG_PUT);
                put_bytes(&mut out, kv.key.as_bytes());
                put_u64(&mut out, kv.create_revision);
                put_u64(&mut out, kv.lease.unwrap_or(0));
                put_bytes(&mut out, &kv.value);
            }
            WatchEvent::Delete { key, prev, .. } => {
                out.push(TAG_DELETE);
                put_bytes(&mut out, key.as_bytes());
                match prev {
                    Some(prev) => {
                        out.push(1);
                        put_bytes(&mut out, prev);
                    }
                    None => out.push(0),
                }
            }
        }
    }
    out
}

/// Decodes what [`encode_events`] wrote for `revision`.
pub(crate) fn decode_events(
    revision: Revision,
    bytes: &[u8],
) -> Result<Vec<WatchEvent>, CodecError> {
    let mut reader = Reader { bytes };
    let count = reader.u64()?;
    // Each event takes at least 10 bytes, so a garbage count cannot make
    // this allocate more than the entry's own size.
    let mut events = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(bytes.len() / 10));
    for _ in 0..count {
        let tag = reader.u8()?;
        let key = reader.string()?;
        match tag {
            TAG_PUT => {
                let create_revision = reader.u64()?;
                let lease = reader.u64()?;
                let value = reader.bytes()?.to_vec();
                events.push(WatchEvent::Put(KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: revision,
                    lease: (lease != 0).then_some(lease),
                }));
            }
            TAG_DELETE => {
                let prev = match reader.u8()? {
                    0 => None,
                    1 => Some(reader.bytes()?.to_vec()),
                    _ => return Err(CodecError("changelog entry has a bad previous-value flag")),
                };
                events.push(WatchEvent::Delete {
                    key,
                    revision,
                    prev,
                });
            }
            _ => return Err(CodecError("changelog entry has an unknown event tag")),
        }
    }
    if !reader.bytes.is_empty() {
        return Err(CodecError("changelog entry has trailing bytes"));
    }
    Ok(events)
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < len {
            return Err(CodecError("stored bytes are truncated"));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u64()?;
        let len =
            usize::try_from(len).map_err(|_| CodecError("stored length does not fit in memory"))?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError("stored key is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_record_round_trips() {
        let record = KeyRecord {
            create_revision: 3,
            mod_revision: 7,
            lease: Some(9),
            value: b"hello".to_vec(),
        };
        assert_eq!(KeyRecord::decode(&record.encode()).unwrap(), record);
        let no_lease = KeyRecord {
            lease: None,
            ..record
        };
        assert_eq!(KeyRecord::decode(&no_lease.encode()).unwrap(), no_lease);
    }

    #[test]
    fn events_round_trip() {
        let events = vec![
            WatchEvent::Put(KeyValue {
                key: "/a".into(),
                value: vec![0, 1, 2],
                create_revision: 2,
                mod_revision: 5,
                lease: None,
            }),
            WatchEvent::Delete {
                key: "/b".into(),
                revision: 5,
                prev: Some(b"old".to_vec()),
            },
            WatchEvent::Delete {
                key: "/c".into(),
                revision: 5,
                prev: None,
            },
        ];
        assert_eq!(decode_events(5, &encode_events(&events)).unwrap(), events);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(KeyRecord::decode(b"short").is_err());
        assert!(KeyRecord::decode(&[0u8; 24]).is_err());
        let good = encode_events(&[WatchEvent::Delete {
            key: "/k".into(),
            revision: 1,
            prev: Some(b"v".to_vec()),
        }]);
        for len in 0..good.len() {
            assert!(
                decode_events(1, &good[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
        let mut huge_count = good.clone();
        huge_count[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_events(1, &huge_count).is_err());
        let mut trailing = good;
        trailing.push(0);
        assert!(decode_events(1, &trailing).is_err());
    }
}
