use super::*;

/// A frame as the other role sends it.
fn frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(Opcode::from_bits(b0 & 0x0F).unwrap(), payload, mask, &mut out);
    out[0] = b0;
    out
}

#[test]
fn encodes_frames_per_rfc_6455() {
    // RFC 6455 section 5.7: a masked "Hello", and the same unmasked.
    let mut out = Vec::new();
    encode(Opcode::Text, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]), &mut out);
    assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    out.clear();
    encode(Opcode::Text, b"Hello", None, &mut out);
    assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    out.clear();
    encode(Opcode::Binary, &[0u8; 640], Some([1, 2, 3, 4]), &mut out);
    assert_eq!(&out[..4], [0x82, 0xFE, 0x02, 0x80]);
    assert_eq!(out.len(), 4 + 4 + 640);
    out.clear();
    encode_close(1008, &"é".repeat(100), None, &mut out);
    assert_eq!(out.len(), 2 + 2 + 122, "cut on a character boundary under 125 bytes");
}

#[test]
fn parses_split_fragmented_and_control_frames_in_both_roles() {
    for (role, mask) in [(Role::Client, None), (Role::Server, Some([9, 8, 7, 6]))] {
        let mut stream = frame(0x82, &[7u8; 640], mask);
        stream.extend(frame(0x01, b"{\"ac", mask));
        stream.extend(frame(0x89, b"hi", mask));
        stream.extend(frame(0x80, b"tion\":\"clear\"}", mask));
        stream.extend(frame(0x88, &1000u16.to_be_bytes(), mask));
        let mut parser = Parser::new(role, 16, 65536);
        let mut got = Vec::new();
        for byte in stream {
            parser.push(&[byte]);
            while let Some(m) = parser.next().unwrap() {
                got.push(format!("{m:?}").chars().take(40).collect::<String>());
            }
        }
        assert_eq!(got.len(), 4);
        assert!(got[0].starts_with("Binary([7, 7"));
        assert_eq!(got[1], "Ping([104, 105])");
        assert_eq!(got[2], "Text(\"{\\\"action\\\":\\\"clear\\\"}\")");
        assert_eq!(got[3], "Close(Some(1000))");
    }
}

#[test]
fn refuses_bad_frames() {
    let m = Some([1, 2, 3, 4]);
    let mut p = Parser::new(Role::Server, 64, 1000);
    p.push(&frame(0x82, &[0; 1001], m));
    assert_eq!(p.next(), Err(WireError::TooBig(1001)));
    let mut p = Parser::new(Role::Server, 64, 1000);
    p.push(&[0x83, 0x80, 0, 0, 0, 0]);
    assert!(p.next().is_err(), "unknown opcode");
    let mut p = Parser::new(Role::Server, 64, 1000);
    p.push(&frame(0x09, b"x", m));
    assert!(p.next().is_err(), "fragmented ping");
    let mut p = Parser::new(Role::Server, 64, 1000);
    p.push(&frame(0x81, &[0xff, 0xfe], m));
    assert_eq!(p.next(), Err(WireError::Utf8));
    let mut p = Parser::new(Role::Server, 64, 1000);
    p.push(&frame(0x82, &[1, 2], None));
    assert_eq!(p.next(), Err(WireError::Invalid("a client frame without a mask")));
    let mut p = Parser::new(Role::Client, 64, 1000);
    p.push(&frame(0x82, &[1, 2], m));
    assert_eq!(p.next(), Err(WireError::Invalid("a masked server frame")));
    let mut p = Parser::new(Role::Server, 64, 1000);
    p.push(&frame(0x80, b"x", m));
    assert!(p.next().is_err(), "a lone continuation");
    let mut p = Parser::new(Role::Server, 64, 1000);
    p.push(&frame(0x02, b"x", m));
    p.push(&frame(0x82, b"y", m));
    assert!(p.next().is_err(), "a whole message inside a fragmented one");
}

#[test]
fn the_buffer_starts_small_and_grows_only_for_a_larger_message() {
    let mut p = Parser::new(Role::Server, 2 * (640 + MAX_HEADER), 1 << 20);
    assert_eq!(p.buffer_mut().len(), 2 * (640 + MAX_HEADER));
    let big = frame(0x82, &[5; 5000], Some([1, 1, 1, 1]));
    p.push(&big);
    assert!(matches!(p.next(), Ok(Some(Message::Binary(b))) if b.len() == 5000 && b.iter().all(|&x| x == 5)));
    assert_eq!(p.buffered(), 0);
    p.push(&frame(0x82, &[7; 3], Some([0, 0, 0, 0])));
    p.shrink_to(64);
    assert_eq!(p.buffered(), 9);
    assert_eq!(p.buffer_mut().len(), 64 - 9);
    assert_eq!(p.next(), Ok(Some(Message::Binary(&[7, 7, 7]))));
}
