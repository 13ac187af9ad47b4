//! Where a MessagePack value ends, found without decoding it: a request body must be one
//! value and nothing after it (JSON refuses trailing bytes the same way). The walk keeps a
//! count of the items still owed instead of recursing, so no nesting can exhaust a stack.

/// The length of the first MessagePack value in `body`, or why there is none.
pub(super) fn first_value_len(body: &[u8]) -> Result<usize, String> {
    let mut at = 0usize;
    // How many values are still to be read: one to start with, plus the elements of
    // every array and map opened on the way.
    let mut owed: u64 = 1;
    while owed > 0 {
        let Some(&marker) = body.get(at) else {
            return Err(format!(
                "the body ends in the middle of a value (at byte {at})"
            ));
        };
        at += 1;
        owed -= 1;
        // (bytes of payload to skip, values this one contains)
        let (skip, items): (usize, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xc1 => {
                return Err(format!(
                    "byte 0xc1 at {} is never used in MessagePack",
                    at - 1
                ));
            }
            0xc4 | 0xd9 => (read_len(body, &mut at, 1)?, 0),
            0xc5 | 0xda => (read_len(body, &mut at, 2)?, 0),
            0xc6 | 0xdb => (read_len(body, &mut at, 4)?, 0),
            0xc7 => (read_len(body, &mut at, 1)? + 1, 0),
            0xc8 => (read_len(body, &mut at, 2)? + 1, 0),
            0xc9 => (read_len(body, &mut at, 4)? + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read_len(body, &mut at, 2)? as u64),
            0xdd => (0, read_len(body, &mut at, 4)? as u64),
            0xde => (0, 2 * read_len(body, &mut at, 2)? as u64),
            0xdf => (0, 2 * read_len(body, &mut at, 4)? as u64),
        };
        at = at
            .checked_add(skip)
            .filter(|&end| end <= body.len())
            .ok_or_else(|| format!("the body ends in the middle of a value (at byte {at})"))?;
        owed += items;
        // Every value takes at least one byte: more owed than bytes left cannot be whole.
        if owed > (body.len() - at) as u64 {
            return Err(format!(
                "the body ends in the middle of a value ({owed} more values announced, {} bytes left)",
                body.len() - at
            ));
        }
    }
    Ok(at)
}

fn read_len(body: &[u8], at: &mut usize, width: usize) -> Result<usize, String> {
    let bytes = body
        .get(*at..*at + width)
        .ok_or_else(|| format!("the body ends in the middle of a value (at byte {at})"))?;
    *at += width;
    Ok(bytes
        .iter()
        .fold(0usize, |len, &byte| (len << 8) | usize::from(byte)))
}

#[cfg(test)]
mod tests {
    use super::first_value_len;

    #[test]
    fn finds_the_end_of_every_kind_of_value() {
        let value = serde_json::json!({
            "a": [1, -1, 300, -300, 70000, 5_000_000_000u64, -5_000_000_000i64, 1.5, null, true],
            "s": "x".repeat(40),
            "long": "y".repeat(70_000),
            "nested": {"m": [[], {}, [[1]]]},
        });
        let mut body = rmp_serde::to_vec_named(&value).unwrap();
        // A bin 16 of 300 bytes after it.
        body.extend_from_slice(&[0xc5, 0x01, 0x2c]);
        body.extend_from_slice(&[7; 300]);
        let first = rmp_serde::to_vec_named(&value).unwrap().len();
        assert_eq!(first_value_len(&body), Ok(first));
        // ext types
        for ext in [
            &[0xd4, 1, 2][..],
            &[0xc7, 2, 1, 9, 9],
            &[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(first_value_len(ext), Ok(ext.len()));
        }
    }

    #[test]
    fn truncated_and_impossible_bodies_are_refused() {
        for bad in [
            &[][..],
            &[0x92, 1],
            &[0xa5, b'a'],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xc1],
            &[0xdb, 0, 0],
        ] {
            assert!(first_value_len(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_walked_without_recursion() {
        let mut body = vec![0x91; 1_000_000];
        body.push(0xc0);
        assert_eq!(first_value_len(&body), Ok(body.len()));
    }
}
