use super::*;

fn manifest(size: u64, chunk_size: u32) -> Manifest {
    Manifest::new("cam.jpg".into(), size, chunk_size, Some([7; 32]), Meta::default(), 9).unwrap()
}

#[test]
fn chunk_encoding_is_postcards() {
    let data = [1u8, 2, 3, 4, 5];
    let ours = Chunk::encode(300, 70000, 2, &data);
    let wire = ChunkWire {
        run: 300,
        seq: 70000,
        index: 2,
        flags: 0,
        crc32: integrity::crc32(&data).to_le_bytes(),
        data: &data,
    };
    let mut theirs = vec![PROTOCOL_VERSION];
    theirs.extend(postcard::to_allocvec(&wire).unwrap());
    assert_eq!(ours, theirs);
}

#[test]
fn compressible_chunks_go_compressed_and_come_back_whole() {
    let data: Vec<u8> = b"2026-12-07 06:19:57 sensor=3 t=21.5C ok\n".repeat(100);
    let m = manifest(data.len() as u64, data.len() as u32);
    let z = Chunk::encode_compressed(1, 0, 0, &data);
    assert!(z.len() < data.len() / 4, "{} bytes", z.len());
    let c = Chunk::decode(&z, 0, &m).unwrap();
    assert_eq!((c.flags, &*c.data, c.crc32), (CHUNK_ZSTD, &data[..], integrity::crc32(&data)));
    assert!(c.wire_len < data.len() / 4);
    // It is postcard's layout, with the flag set and the CRC over the wire bytes.
    let wire: ChunkWire<'_> = postcard::from_bytes(&z[1..]).unwrap();
    assert_eq!(wire.flags, CHUNK_ZSTD);
    assert_eq!(u32::from_le_bytes(wire.crc32), integrity::crc32(wire.data));
}

#[test]
fn incompressible_chunks_go_raw() {
    // Random bytes: zstd cannot shrink them.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert_eq!(Chunk::encode_compressed(1, 0, 0, &data), Chunk::encode(1, 0, 0, &data));
    // Nor a chunk that would shrink by less than 3 %: 97 % random.
    let mut mostly = data.clone();
    mostly[..100].fill(0);
    assert_eq!(Chunk::encode_compressed(1, 0, 0, &mostly), Chunk::encode(1, 0, 0, &mostly));
}

/// Bytes that zstd cannot shrink, `len` of them.
fn random_bytes(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_chunk_encoded_from_its_reader_is_the_one_encoding() {
    // Numbers on both sides of each varint length, and data lengths whose own
    // varint changes there too (127/128, 16383/16384), up to a full chunk of
    // the default size and the largest.
    let numbers = [0, 1, 127, 128, 300, 16_383, 16_384, 70_000, u32::MAX];
    let lens = [0, 1, 5, 127, 128, 16_383, 16_384, 256 << 10, MAX_CHUNK_SIZE as usize];
    let source = random_bytes(MAX_CHUNK_SIZE as usize, 0x9e37_79b9_7f4a_7c15);
    for (k, &len) in lens.iter().enumerate() {
        let data = &source[..len];
        for (i, &n) in numbers.iter().enumerate() {
            let (run, seq, index) = (n, numbers[(i + k + 1) % numbers.len()], numbers[(i + 2 * k + 2) % numbers.len()]);
            let from = Chunk::encode_from(run, seq, index, len, |buf: &mut [u8]| {
                assert_eq!(buf.len(), len);
                buf.copy_from_slice(data);
                Ok::<(), ()>(())
            });
            let from = from.unwrap();
            assert!(from == Chunk::encode(run, seq, index, data), "run {run} seq {seq} index {index} len {len}");
            // One allocation, of exactly the payload: nothing to grow or trim.
            assert_eq!(from.capacity(), from.len());
        }
    }
}

#[test]
fn a_compressed_chunk_encoded_from_its_reader_is_the_one_encoding() {
    let text: Vec<u8> = b"2026-12-07 06:19:57 sensor=3 t=21.5C ok\n".repeat(3000);
    let random = random_bytes(128 << 10, 7);
    let mut mostly_random = random.clone();
    mostly_random[..1000].fill(0);
    for data in [&text[..], &random, &mostly_random, &text[..1], &[][..]] {
        for (run, seq, index) in [(1, 0, 0), (300, 70_000, 2), (u32::MAX, 128, 127)] {
            let fill = |buf: &mut [u8]| {
                buf.copy_from_slice(data);
                Ok::<(), ()>(())
            };
            let (payload, wire) = Chunk::encode_compressed_from(run, seq, index, data.len(), fill).unwrap();
            let mut expected = Vec::new();
            let expected_wire = Chunk::encode_compressed_into(&mut expected, run, seq, index, data);
            assert!(payload == expected, "{} bytes, run {run}", data.len());
            assert_eq!(wire, expected_wire);
        }
    }
    // The text went compressed, the random bytes raw.
    let fill = |buf: &mut [u8]| {
        buf.copy_from_slice(&text);
        Ok::<(), ()>(())
    };
    assert!(Chunk::encode_compressed_from(1, 0, 0, text.len(), fill).unwrap().1 < text.len() / 4);
}

#[test]
fn a_chunk_ref_encodes_from_its_reader_with_either_compression() {
    let text: Vec<u8> = b"log line, log line\n".repeat(500);
    let c = crate::ChunkRef { run: 9, seq: 128, index: 3, offset: 0, len: text.len() as u64 };
    for compression in [Compression::None, Compression::Zstd] {
        let got = c.encode_from(compression, |buf| {
            buf.copy_from_slice(&text);
            Ok(())
        });
        assert_eq!(got.unwrap(), c.encode_with(&text, compression));
    }
}

#[test]
fn a_failed_read_is_the_encoders_error() {
    let failed = Chunk::encode_from(1, 2, 3, 10, |_: &mut [u8]| Err("short read"));
    assert_eq!(failed, Err("short read"));
    let failed = Chunk::encode_compressed_from(1, 2, 3, 10, |_: &mut [u8]| Err("short read"));
    assert_eq!(failed, Err("short read"));
    let c = crate::ChunkRef { run: 1, seq: 2, index: 3, offset: 0, len: 10 };
    let failed = c.encode_from(Compression::Zstd, |_| Err(std::io::ErrorKind::UnexpectedEof.into()));
    assert_eq!(failed.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_chunk_that_inflates_past_its_length_is_refused() {
    // 1 MiB of zeros compresses to a few dozen bytes; the manifest says the
    // chunk has 4 KiB.
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], ZSTD_LEVEL).unwrap();
    let m = manifest(4096, 4096);
    let mut payload = Vec::new();
    Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, &bomb);
    assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadCompression(0)));
    // One that decompresses short of its length, or is no zstd at all.
    let short = zstd::bulk::compress(&[0u8; 4000], ZSTD_LEVEL).unwrap();
    Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, &short);
    assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadCompression(0)));
    Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, b"not zstd");
    assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadCompression(0)));
    // "Compressed" bytes as long as the chunk: refused before decoding.
    Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, &[0; 4096]);
    assert!(matches!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadChunkLength { .. })));
    // A flag this version does not know.
    Chunk::encode_parts(&mut payload, 1, 0, 0, 0x02, &[0; 4096]);
    assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::UnknownChunkFlags(0x02)));
}

#[test]
fn chunk_checks() {
    let m = manifest(10, 4);
    assert_eq!(m.chunk_count, 3);
    let ok = Chunk::encode(1, 0, 2, &[9, 9]);
    assert_eq!(&*Chunk::decode(&ok, 2, &m).unwrap().data, &[9, 9]);
    assert_eq!(Chunk::decode(&ok, 1, &m), Err(DecodeError::IndexMismatch { topic: 1, payload: 2 }));
    let past = Chunk::encode(1, 0, 3, &[9, 9]);
    assert_eq!(Chunk::decode(&past, 3, &m), Err(DecodeError::IndexOutOfRange { index: 3, count: 3 }));
    let short = Chunk::encode(1, 0, 0, &[9, 9]);
    assert!(matches!(Chunk::decode(&short, 0, &m), Err(DecodeError::BadChunkLength { .. })));
    let mut bad = Chunk::encode(1, 0, 2, &[9, 9]);
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(Chunk::decode(&bad, 2, &m), Err(DecodeError::BadCrc(2)));
    let mut trailing = ok.clone();
    trailing.push(0);
    assert_eq!(Chunk::decode(&trailing, 2, &m), Err(DecodeError::TrailingBytes(1)));
    let mut v1 = ok.clone();
    v1[0] = 1;
    assert_eq!(Chunk::decode(&v1, 2, &m), Err(DecodeError::UnsupportedVersion(1)));
    assert_eq!(Chunk::decode(&[], 2, &m), Err(DecodeError::Empty));
    assert_eq!(Chunk::decode(&ok[..ok.len() - 1], 2, &m), Err(DecodeError::Malformed));
}

#[test]
fn manifest_round_trip_and_checks() {
    let mut m = manifest(1 << 20, 1000);
    m.meta =
        Meta { content_type: Some("image/jpeg".into()), modified_ms: Some(-5), user: vec![("k".into(), "v".into())] };
    let m = Manifest::new(m.name.clone(), m.size, m.chunk_size, m.sha256, m.meta.clone(), 3).unwrap();
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);

    let mut lie = m.clone();
    lie.chunk_count += 1;
    assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::BadChunkCount));
    let mut lie = m.clone();
    lie.size += 1;
    assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::IdMismatch));
    let mut lie = m.clone();
    lie.meta.user = vec![("k".into(), "v".into()); MAX_USER_ENTRIES + 1];
    assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::BadMeta));
    assert_eq!(
        Manifest::new("x".repeat(MAX_NAME_LEN + 1), 1, 1, Some([0; 32]), Meta::default(), 0),
        Err(DecodeError::BadName)
    );
    assert_eq!(Manifest::new(String::new(), 1, 1, Some([0; 32]), Meta::default(), 0), Err(DecodeError::BadName));
    assert_eq!(Manifest::new("a".into(), 1, 0, Some([0; 32]), Meta::default(), 0), Err(DecodeError::BadChunkSize));
    assert_eq!(
        Manifest::new("a".into(), u64::MAX, 1, Some([0; 32]), Meta::default(), 0),
        Err(DecodeError::BadChunkCount)
    );
    let mut big = m.encode();
    big.resize(MAX_MANIFEST_LEN + 1, 0);
    assert_eq!(Manifest::decode(&big), Err(DecodeError::TooLarge(MAX_MANIFEST_LEN + 1)));
}

#[test]
fn chunk_lengths() {
    let m = manifest(10, 4);
    assert_eq!((0..3).map(|i| m.chunk_len(i)).collect::<Vec<_>>(), vec![4, 4, 2]);
    assert_eq!(manifest(0, 4).chunk_count, 0);
    assert_eq!(manifest(8, 4).chunk_count, 2);
    assert_eq!(manifest(9, 4).chunk_count, 3);
}

#[test]
fn acks_round_trip_and_check_ranges() {
    let all: RangeSet = [1, 2, 3, 7].into_iter().collect();
    for ack in [
        Ack::Ready { run: 1, held: all.clone(), from_start: false },
        Ack::Progress { run: 1, next_seq: 99, held: 4 },
        Ack::Missing { run: 1, next_seq: 5, missing: all.clone(), more: true },
        Ack::Complete { sha256: [3; 32] },
        Ack::Rejected { reason: RejectReason::DiskFull, detail: String::new() },
        Ack::Rejected { reason: RejectReason::Other(999), detail: "read-only file system".into() },
        Ack::Rejected { reason: RejectReason::QueueFull, detail: "é".repeat(MAX_REJECT_DETAIL_LEN / 2) },
        Ack::Queued { run: 1, position: 300 },
        Ack::Stored { sha256: [3; 32], name: "a (1).jpg".into(), change: NameChange::Renamed, detail: "x".into() },
        Ack::Stored { sha256: [3; 32], name: "é".repeat(512), change: NameChange::Other(9), detail: String::new() },
    ] {
        assert_eq!(Ack::decode(&ack.encode(), 8).unwrap(), ack);
    }
    let ready = Ack::Ready { run: 1, held: all, from_start: false }.encode();
    assert_eq!(Ack::decode(&ready, 7), Err(DecodeError::Ranges(RangeError::OutOfRange)));
}

/// Found by fuzzing (`fuzz/corpus/decode_ack/regress-progress-held-past-chunk-count`):
/// a `Progress` count is bounded by the chunk count, like the range lists.
#[test]
fn progress_holds_at_most_every_chunk() {
    let all = Ack::Progress { run: 1, next_seq: 10, held: 8 };
    assert_eq!(Ack::decode(&all.encode(), 8), Ok(all));
    let empty = Ack::Progress { run: 1, next_seq: 0, held: 0 };
    assert_eq!(Ack::decode(&empty.encode(), 0), Ok(empty));
    let past = Ack::Progress { run: 1, next_seq: 10, held: 9 }.encode();
    assert_eq!(Ack::decode(&past, 8), Err(DecodeError::HeldOutOfRange { held: 9, count: 8 }));
    let max = Ack::Progress { run: 1, next_seq: 10, held: u32::MAX }.encode();
    assert_eq!(Ack::decode(&max, 10), Err(DecodeError::HeldOutOfRange { held: u32::MAX, count: 10 }));
}

/// The varint that ends at `at`, one byte longer: `07` becomes `87 00`.
fn lengthen(payload: &[u8], at: usize) -> Vec<u8> {
    assert!(payload[at] < 0x80, "byte {at} does not end a varint");
    let mut p = payload.to_vec();
    p[at] |= 0x80;
    p.insert(at + 1, 0);
    p
}

/// Found by fuzzing (`fuzz/corpus/decode_ctl/regress-overlong-varint`,
/// `fuzz/corpus/decode_manifest/regress-overlong-varint`): postcard reads
/// `80 00` as 0, so every message had many spellings. Each varint of each kind
/// of message, made longer than needed, is refused.
#[test]
fn non_minimal_varints_are_refused() {
    let end_round = Ctl::EndRound { run: 300, next_seq: 3, sha256: None, size: None }.encode();
    assert_eq!(end_round, [PROTOCOL_VERSION, 0, 0xac, 0x02, 3, 0, 0]);
    for at in [1, 3, 4] {
        assert_eq!(Ctl::decode(&lengthen(&end_round, at)), Err(DecodeError::NonMinimalVarint), "byte {at}");
    }
    // As long as a u32 can be, and still 0.
    assert_eq!(
        Ctl::decode(&[PROTOCOL_VERSION, 0, 0x80, 0x80, 0x80, 0x80, 0x00, 3, 0, 0]),
        Err(DecodeError::NonMinimalVarint)
    );

    let progress = Ack::Progress { run: 1, next_seq: 300, held: 2 }.encode();
    assert_eq!(progress, [PROTOCOL_VERSION, 1, 1, 0xac, 0x02, 2]);
    for at in [1, 2, 4, 5] {
        assert_eq!(Ack::decode(&lengthen(&progress, at), 8), Err(DecodeError::NonMinimalVarint), "byte {at}");
    }
    // A range list's count, gap and length.
    let ready = Ack::Ready { run: 1, held: [2].into_iter().collect(), from_start: false }.encode();
    assert_eq!(ready, [PROTOCOL_VERSION, 0, 1, 1, 2, 1, 0]);
    for at in [3, 4, 5] {
        assert_eq!(Ack::decode(&lengthen(&ready, at), 8), Err(DecodeError::NonMinimalVarint), "byte {at}");
    }

    let m = manifest(10, 4);
    let enc = m.encode();
    // Version, id, then the run (9) and the name's length (7).
    assert_eq!(enc[17..19], [9, 7]);
    for at in [17, 18] {
        assert_eq!(Manifest::decode(&lengthen(&enc, at)), Err(DecodeError::NonMinimalVarint), "byte {at}");
    }

    // A chunk's run, seq, index and (after the flags and the CRC) data length;
    // the data is not copied to check.
    let chunk = Chunk::encode(1, 2, 2, &[9, 9]);
    assert_eq!(chunk[..5], [PROTOCOL_VERSION, 1, 2, 2, 0]);
    for at in [1, 2, 3, 9] {
        assert_eq!(Chunk::decode(&lengthen(&chunk, at), 2, &m), Err(DecodeError::NonMinimalVarint), "byte {at}");
    }
    assert!(Chunk::decode(&chunk, 2, &m).is_ok());
}

/// A v1 peer's message is refused with an error that names both versions, so a
/// mixed deployment says what is wrong instead of "malformed".
#[test]
fn a_v1_message_names_both_versions() {
    let v1 = [1, 0, 0xac, 0x02, 3];
    let err = Ctl::decode(&v1).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedVersion(1));
    assert_eq!(err.to_string(), format!("protocol version 1, this peer speaks {PROTOCOL_VERSION}"));
}

/// A rejection's detail is bounded: the encoder cuts a long one at a character
/// boundary, and a decoder refuses one past the cap.
#[test]
fn rejection_details_are_bounded() {
    let long = Ack::Rejected { reason: RejectReason::Io, detail: "é".repeat(MAX_REJECT_DETAIL_LEN) };
    let Ack::Rejected { detail, .. } = Ack::decode(&long.encode(), 1).unwrap() else { panic!() };
    assert_eq!(detail, "é".repeat(MAX_REJECT_DETAIL_LEN / 2));
    // By hand: Rejected (4), reason 7, then a string of 201 bytes.
    let mut over = vec![PROTOCOL_VERSION, 4, 7, 0xc9, 0x01];
    over.extend(std::iter::repeat_n(b'a', MAX_REJECT_DETAIL_LEN + 1));
    assert_eq!(Ack::decode(&over, 1), Err(DecodeError::BadDetail(MAX_REJECT_DETAIL_LEN + 1)));
    over.truncate(over.len() - 1);
    over[3] = 0xc8;
    assert!(matches!(Ack::decode(&over, 1), Ok(Ack::Rejected { reason: RejectReason::Io, .. })));
}

/// A sender name is the receiver-id alphabet or empty, bounded; a stored name
/// is never empty and bounded, and its detail bounded like a rejection's.
#[test]
fn sender_and_stored_names_are_bounded() {
    let m = manifest(10, 4);
    assert_eq!(Manifest::decode(&m.encode()).unwrap().sender, "");
    let named = m.clone().with_sender("cam-7").unwrap();
    assert_eq!(Manifest::decode(&named.encode()).unwrap(), named);
    assert_eq!(named.id, m.id, "the sender is not part of the transfer id");
    let longest = "a".repeat(MAX_SENDER_LEN);
    assert!(m.clone().with_sender(&longest).is_ok());
    for bad in ["Cam", "cam 7", "cam.7", "../x", "é"] {
        assert_eq!(m.clone().with_sender(bad), Err(DecodeError::BadSender), "{bad:?}");
        let mut lie = m.clone();
        lie.sender = bad.into();
        assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::BadSender), "{bad:?}");
    }
    assert_eq!(m.clone().with_sender(&format!("{longest}a")), Err(DecodeError::BadSender));

    let stored =
        |name: String| Ack::Stored { sha256: [0; 32], name, change: NameChange::Sanitized, detail: String::new() };
    assert_eq!(Ack::decode(&stored(String::new()).encode(), 1), Err(DecodeError::BadStoredName(0)));
    let over = "a".repeat(MAX_STORED_NAME_LEN + 1);
    assert_eq!(Ack::decode(&stored(over).encode(), 1), Err(DecodeError::BadStoredName(MAX_STORED_NAME_LEN + 1)));
    let long = Ack::Stored {
        sha256: [0; 32],
        name: "a".into(),
        change: NameChange::Renamed,
        detail: "é".repeat(MAX_REJECT_DETAIL_LEN),
    };
    let Ack::Stored { detail, .. } = Ack::decode(&long.encode(), 1).unwrap() else { panic!() };
    assert_eq!(detail.len(), MAX_REJECT_DETAIL_LEN, "cut at a character boundary by the encoder");
}

#[test]
fn an_older_message_names_both_versions() {
    let err = Ctl::decode(&[5, 0, 0xac, 0x02, 3, 0]).unwrap_err();
    assert_eq!(err.to_string(), "protocol version 5, this peer speaks 6");
}

/// `to` is bounded and holds only valid receiver ids, and is not part of the
/// transfer id.
#[test]
fn addressed_receivers_are_checked() {
    let rid = |s: &str| crate::ReceiverId::new(s).unwrap();
    let m = manifest(10, 4).with_to([rid("gw3")]).unwrap();
    assert_eq!(m.id, manifest(10, 4).id);
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    assert!(m.is_for(&rid("gw3")) && !m.is_for(&rid("gw1")));
    assert!(manifest(10, 4).is_for(&rid("gw1")));
    for bad in [vec!["Gw1".to_owned()], vec![String::new()], vec!["a".to_owned(); MAX_TO + 1]] {
        let m = Manifest { to: bad, ..manifest(10, 4) };
        assert_eq!(Manifest::decode(&m.encode()), Err(DecodeError::BadTo));
    }
    let full = Manifest { to: vec!["a".repeat(64); MAX_TO], ..manifest(10, 4) };
    assert!(full.encode().len() < MAX_MANIFEST_LEN);
    assert_eq!(Manifest::decode(&full.encode()).unwrap(), full);
}

#[test]
fn ctl_round_trip() {
    for c in [
        Ctl::EndRound { run: 5, next_seq: 1000, sha256: None, size: None },
        Ctl::Abort { run: 5, reason: AbortReason::Finished },
    ] {
        assert_eq!(Ctl::decode(&c.encode()).unwrap(), c);
    }
    let mut t = Ctl::EndRound { run: 5, next_seq: 1, sha256: None, size: None }.encode();
    t.push(0);
    assert_eq!(Ctl::decode(&t), Err(DecodeError::TrailingBytes(1)));
    assert_eq!(Ctl::decode(&[PROTOCOL_VERSION, 9]), Err(DecodeError::Malformed));
}

/// Version 4: the hash is optional, except where nothing else would bring it or
/// the id is bound to it: a held or an encrypted manifest without one is refused.
#[test]
fn the_hash_is_optional_but_not_for_held_or_sealed_manifests() {
    let bare = Manifest { sha256: None, ..manifest(10, 4) };
    assert_eq!(Manifest::decode(&bare.encode()).unwrap(), bare);
    let held = Manifest { hold_until_ms: Some(1), ..bare.clone() };
    assert_eq!(Manifest::decode(&held.encode()), Err(DecodeError::HeldWithoutDigest));
    let with = Manifest { hold_until_ms: Some(1), ..manifest(10, 4) };
    assert_eq!(Manifest::decode(&with.encode()).unwrap(), with);
    let sealed = Manifest {
        sealed: Some(Sealed {
            recipients: vec![Recipient { epk: [1; 32], wrapped: [2; 32], tag: [3; 16] }],
            body: vec![0; 20],
        }),
        ..bare
    };
    assert_eq!(Manifest::decode(&sealed.encode()), Err(DecodeError::SealedWithoutDigest));
}

/// A stream's manifest (version 6): open, with the bound and no hash, then closed
/// at its size; the same transfer both ways, with an id that names the run and
/// not the size; and every rule a decoder checks.
#[test]
fn stream_manifests_open_and_close() {
    let open = Manifest::new_stream("dir.tar".into(), 4, Meta::default(), 9).unwrap();
    assert!(open.is_open() && open.stream);
    assert_eq!((open.size, open.chunk_count), (UNKNOWN_SIZE, MAX_CHUNK_COUNT));
    assert_eq!(Manifest::decode(&open.encode()), Ok(open.clone()));
    let closed = open.close(10).unwrap();
    assert_eq!((closed.size, closed.chunk_count, closed.id), (10, 3, open.id));
    assert!(!closed.is_open() && open.same_transfer(&closed) && closed.same_transfer(&open));
    assert_eq!(Manifest::decode(&closed.encode()), Ok(closed.clone()));
    assert!(!closed.same_transfer(&open.close(11).unwrap()), "two closed streams of two sizes differ");
    assert_eq!(closed.close(12), Err(DecodeError::BadChunkCount), "closed once");
    assert_eq!(open.close(u64::from(MAX_CHUNK_COUNT) * 4 + 1), Err(DecodeError::BadChunkCount));
    // Another run is another transfer; a file of the same name is another too.
    let again = Manifest::new_stream("dir.tar".into(), 4, Meta::default(), 10).unwrap();
    assert_ne!(again.id, open.id);
    let file = Manifest::new("dir.tar".into(), 10, 4, None, Meta::default(), 9).unwrap();
    assert!(!file.same_transfer(&closed));
    // An open manifest carries no hash; a stream is never signed, sealed or held.
    let hashed = Manifest { sha256: Some([1; 32]), ..open.clone() };
    assert_eq!(Manifest::decode(&hashed.encode()), Err(DecodeError::BadStream));
    let held = Manifest { hold_until_ms: Some(1), ..closed.clone().with_digest([1; 32]) };
    assert_eq!(Manifest::decode(&held.encode()), Err(DecodeError::BadStream));
    let unbounded = Manifest { chunk_count: 5, ..open.clone() };
    assert_eq!(Manifest::decode(&unbounded.encode()), Err(DecodeError::BadStream));
    let not_stream = Manifest { stream: false, ..open.clone() };
    assert!(Manifest::decode(&not_stream.encode()).is_err());
}

/// An open stream's chunks may be short (the last one), never empty.
#[test]
fn open_stream_chunks_may_be_short() {
    let open = Manifest::new_stream("s".into(), 4, Meta::default(), 9).unwrap();
    let short = Chunk::encode(9, 0, 7, b"ab");
    assert_eq!(&*Chunk::decode(&short, 7, &open).unwrap().data, b"ab");
    assert!(Chunk::decode(&Chunk::encode(9, 0, 7, b"abcd"), 7, &open).is_ok());
    assert!(matches!(Chunk::decode(&Chunk::encode(9, 0, 7, b""), 7, &open), Err(DecodeError::BadChunkLength { .. })));
    assert!(matches!(
        Chunk::decode(&Chunk::encode(9, 0, 7, b"abcde"), 7, &open),
        Err(DecodeError::TooLarge { .. } | DecodeError::BadChunkLength { .. })
    ));
    // Compressed, a short last chunk comes back at its own length.
    let text = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let big = Manifest::new_stream("s".into(), 1024, Meta::default(), 9).unwrap();
    let z = Chunk::encode_compressed(9, 0, 3, text);
    assert_eq!(&*Chunk::decode(&z, 3, &big).unwrap().data, &text[..]);
}
