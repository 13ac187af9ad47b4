use super::*;

/// The properties of a call to `function`, ID 7, with a timeout of 5 s.
fn a_call(function: &str, codec: Codec) -> BasicProperties {
    request_properties(
        function,
        codec,
        "7".into(),
        Duration::from_secs(5),
        &FieldTable::default(),
    )
}

#[test]
fn request_properties_round_trip_through_request_meta() {
    let props = a_call("add", Codec::Json);
    assert_eq!(props.expiration().as_ref().unwrap().as_str(), "5000");
    assert!(props.headers().is_none(), "version 2 sends no header table");
    let meta = RequestMeta::read(&props);
    assert_eq!(meta.version, 2);
    assert_eq!(meta.function.as_deref(), Some("add"));
    assert_eq!(meta.codec, Ok(Codec::Json));
    assert_eq!(meta.correlation_id.unwrap().as_str(), "7");
    assert_eq!(meta.reply_to.unwrap().as_str(), DIRECT_REPLY_TO);
    let left = meta
        .deadline
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5));
}

#[test]
fn a_messagepack_request_has_no_content_type_and_is_read_as_messagepack() {
    let props = a_call("add", Codec::MsgPack);
    assert_eq!(props.content_type(), &None);
    assert_eq!(RequestMeta::read(&props).codec, Ok(Codec::MsgPack));
    let json = a_call("add", Codec::Json);
    let content_type = json.content_type().as_ref().map(ShortString::as_str);
    assert_eq!(content_type, Some("application/json"));
}

#[test]
fn a_name_too_long_for_type_goes_in_version_1_headers() {
    let name = "f".repeat(MAX_TYPE_LEN + 1);
    let props = a_call(&name, Codec::MsgPack);
    assert!(props.kind().is_none());
    let meta = RequestMeta::read(&props);
    assert_eq!(meta.version, 1);
    assert_eq!(meta.function.as_deref(), Some(name.as_str()));
    assert!(meta.deadline.unwrap() > SystemTime::now());
    let cast = RequestMeta::read(&cast_properties(
        &name,
        Codec::MsgPack,
        &FieldTable::default(),
    ));
    assert_eq!(
        (cast.version, cast.function.as_deref()),
        (1, Some(name.as_str()))
    );
}

#[test]
fn version_1_headers_win_over_type_and_a_layer_cannot_fake_them() {
    // A version 1 request whose sender put something else in `type`.
    let mut headers = FieldTable::default();
    headers.insert(HEADER_FUNCTION.into(), AMQPValue::LongString("add".into()));
    let props = BasicProperties::default()
        .with_headers(headers.clone())
        .with_type("order".into())
        .with_timestamp(1);
    let meta = RequestMeta::read(&props);
    assert_eq!((meta.version, meta.function.as_deref()), (1, Some("add")));
    assert_eq!(
        meta.deadline, None,
        "version 1 reads no deadline from `timestamp`"
    );
    // A client layer's header of a version 1 name does not replace the function.
    headers.insert(HEADER_DEADLINE.into(), AMQPValue::LongLongInt(0));
    headers.insert("tenant".into(), AMQPValue::LongString("a".into()));
    let props = request_properties(
        "sub",
        Codec::MsgPack,
        "1".into(),
        Duration::from_secs(5),
        &headers,
    );
    let meta = RequestMeta::read(&props);
    assert_eq!((meta.version, meta.function.as_deref()), (2, Some("sub")));
    assert!(meta.deadline.unwrap() > SystemTime::now());
    let sent = props.headers().as_ref().unwrap().inner();
    assert!(sent.contains_key("tenant") && sent.len() == 1);
}

#[test]
fn a_version_2_deadline_is_the_timestamp_in_milliseconds() {
    let read = |timestamp| {
        RequestMeta::read(
            &BasicProperties::default()
                .with_type("f".into())
                .with_timestamp(timestamp),
        )
        .deadline
    };
    assert_eq!(read(1500), Some(UNIX_EPOCH + Duration::from_millis(1500)));
    assert!(read(u64::MAX).unwrap() > SystemTime::now());
    let none = RequestMeta::read(&BasicProperties::default().with_type("f".into()));
    assert_eq!((none.version, none.deadline), (2, None));
}

#[test]
fn foreign_header_types_are_understood() {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_FUNCTION.into(), AMQPValue::ShortString("f".into()));
    headers.insert(HEADER_DEADLINE.into(), AMQPValue::LongString("1000".into()));
    let props = BasicProperties::default()
        .with_headers(headers)
        .with_content_type("text/csv".into());
    let meta = RequestMeta::read(&props);
    assert_eq!(meta.function.as_deref(), Some("f"));
    assert_eq!(meta.deadline, Some(UNIX_EPOCH + Duration::from_secs(1)));
    assert!(meta.codec.unwrap_err().contains("text/csv"));
    assert!(meta.reply_to.is_none());
}

#[test]
fn a_negative_deadline_is_in_the_past() {
    for value in [
        AMQPValue::LongLongInt(-5),
        AMQPValue::LongInt(-1),
        AMQPValue::ShortShortInt(-1),
        AMQPValue::LongString("-1000".into()),
        AMQPValue::Double(-0.5),
        AMQPValue::Double(f64::NAN),
    ] {
        let mut headers = FieldTable::default();
        headers.insert(HEADER_DEADLINE.into(), value.clone());
        let meta = RequestMeta::read(&BasicProperties::default().with_headers(headers));
        assert_eq!(meta.deadline, Some(UNIX_EPOCH), "{value:?}");
    }
    let mut headers = FieldTable::default();
    headers.insert(HEADER_DEADLINE.into(), AMQPValue::LongLongInt(i64::MAX));
    let meta = RequestMeta::read(&BasicProperties::default().with_headers(headers));
    assert!(meta.deadline.unwrap() > SystemTime::now());
}

#[test]
fn a_reply_without_status_is_not_ok() {
    assert!(!reply_is_ok(&BasicProperties::default()));
    assert!(reply_is_ok(&reply_properties(None, None, true)));
    assert!(!reply_is_ok(&reply_properties(
        Some(Codec::Json),
        None,
        false
    )));
}

/// A small deterministic generator, so that a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn value(&mut self, depth: u32) -> AMQPValue {
        let n = self.next();
        match n % if depth > 2 { 14 } else { 16 } {
            0 => AMQPValue::Boolean(n & 1 == 0),
            1 => AMQPValue::ShortShortInt(n as i8),
            2 => AMQPValue::ShortShortUInt(n as u8),
            3 => AMQPValue::ShortInt(n as i16),
            4 => AMQPValue::ShortUInt(n as u16),
            5 => AMQPValue::LongInt(n as i32),
            6 => AMQPValue::LongUInt(n as u32),
            7 => AMQPValue::LongLongInt(n as i64),
            8 => AMQPValue::Float(f32::from_bits(n as u32)),
            9 => AMQPValue::Double(f64::from_bits(n)),
            10 => AMQPValue::LongString(self.bytes().into()),
            11 => AMQPValue::ShortString(
                String::from_utf8_lossy(&self.bytes())
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .into(),
            ),
            12 => AMQPValue::Timestamp(n),
            13 => AMQPValue::Void,
            14 => AMQPValue::FieldArray(
                (0..n % 4)
                    .map(|_| self.value(depth + 1))
                    .collect::<Vec<_>>()
                    .into(),
            ),
            _ => AMQPValue::FieldTable(self.table(depth + 1)),
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.next() % 24;
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn table(&mut self, depth: u32) -> FieldTable {
        let mut table = FieldTable::default();
        for _ in 0..self.next() % 4 {
            let key = match self.next() % 3 {
                0 => HEADER_FUNCTION.to_owned(),
                1 => HEADER_DEADLINE.to_owned(),
                _ => format!("k{}", self.next() % 5),
            };
            table.insert(key.into(), self.value(depth));
        }
        table
    }
}

#[test]
fn fuzzed_request_properties_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut props = BasicProperties::default().with_headers(rng.table(0));
        if rng.next().is_multiple_of(2) {
            let ct = String::from_utf8_lossy(&rng.bytes()).into_owned();
            props = props.with_content_type(ct.into());
        }
        if rng.next().is_multiple_of(2) {
            props = props.with_reply_to("".into());
        }
        // Version 2's properties: any function name, any timestamp.
        if rng.next().is_multiple_of(2) {
            let name = String::from_utf8_lossy(&rng.bytes()).into_owned();
            props = props.with_type(name.into());
        }
        if rng.next().is_multiple_of(2) {
            props = props.with_timestamp(rng.next());
        }
        let meta = RequestMeta::read(&props);
        // A deadline, when read, is a real instant.
        if let Some(deadline) = meta.deadline {
            let _ = deadline.duration_since(UNIX_EPOCH).unwrap();
        }
        let _ = reply_is_ok(&props);
    }
}

#[test]
fn error_codes_round_trip() {
    for code in [
        "bad_request",
        "not_found",
        "handler_error",
        "internal",
        "deadline_exceeded",
        "x",
    ] {
        assert_eq!(ErrorCode::parse(code).as_str(), code);
    }
}
