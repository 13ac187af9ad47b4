//! Reading a direct reply-to address as RabbitMQ will, before a reply is published to it.
//!
//! A caller's `reply_to` is the one routing key a server publishes to that the caller
//! wrote, and RabbitMQ (3.10 to 4.0 at least) decodes a direct reply-to address in the
//! publishing channel's process: a suffix it cannot decode crashes that process, and the
//! broker closes the whole connection (541 `INTERNAL_ERROR`), every other request and reply
//! on it included. RabbitMQ 3.10 crashes too on a well-formed address naming a node it
//! does not know. What it makes of an address, seen on both versions:
//!
//! `amq.rabbitmq.reply-to.` + base64(pid) + `.` + base64(16-byte key), where the pid is
//! Erlang's external term format of a `NEW_PID_EXT` whose node is `reply@<hash>`:
//! `131, 88, 118, len(u16), node, id(u32), serial(u32), creation(u32)`.
//!
//! So a server reads an address before replying to it: an address that is not a direct
//! reply-to one is a queue name (harmless); a readable one names its node, and a node the
//! server has delivered a reply to before is safe; anything else may close the connection
//! it is published on, and goes out on one of its own (see `server::reply`). The suffix is
//! opaque by RabbitMQ's documentation and may change shape in later versions: an address
//! this module cannot read is not refused, only isolated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::DIRECT_REPLY_TO;

/// What a reply address is, as far as publishing to it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectReplyTo<'a> {
    /// Not a direct reply-to address: a queue, reached through the default exchange.
    Queue,
    /// A direct reply-to address of a caller connected to `node` (`reply@<hash>`).
    Node(&'a [u8]),
    /// A direct reply-to address this module cannot read: it may crash the broker's
    /// channel (a malformed one does, on every version tested).
    Unreadable,
}

/// Where `reply_to` leads; `scratch` holds the decoded pid that [`DirectReplyTo::Node`]
/// borrows its node from.
pub(crate) fn direct_reply_to<'a>(reply_to: &str, scratch: &'a mut [u8; 96]) -> DirectReplyTo<'a> {
    let Some(suffix) = reply_to
        .strip_prefix(DIRECT_REPLY_TO)
        .and_then(|rest| rest.strip_prefix('.'))
    else {
        return DirectReplyTo::Queue;
    };
    node(suffix, scratch).map_or(DirectReplyTo::Unreadable, DirectReplyTo::Node)
}

fn node<'a>(suffix: &str, scratch: &'a mut [u8; 96]) -> Option<&'a [u8]> {
    let (pid, key) = suffix.split_once('.')?;
    let mut key_bytes = [0u8; 24];
    if STANDARD.decode_slice(key, &mut key_bytes).ok()? != 16 {
        return None;
    }
    let len = STANDARD.decode_slice(pid, scratch).ok()?;
    let pid = &scratch[..len];
    // 131: the external term format; 88: NEW_PID_EXT; then the node as an atom.
    let rest = pid.strip_prefix(&[131, 88])?;
    let (node, rest) = match rest {
        [118, hi, lo, rest @ ..] => {
            rest.split_at_checked(usize::from(u16::from_be_bytes([*hi, *lo])))?
        }
        [119, len, rest @ ..] => rest.split_at_checked(usize::from(*len))?,
        _ => return None,
    };
    // ID, serial and creation, four bytes each, and nothing after.
    if rest.len() != 12 {
        return None;
    }
    let hash = node.strip_prefix(b"reply@")?;
    (!hash.is_empty() && hash.iter().all(u8::is_ascii_digit)).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(address: &str) -> Option<Option<String>> {
        let mut scratch = [0; 96];
        match direct_reply_to(address, &mut scratch) {
            DirectReplyTo::Queue => None,
            DirectReplyTo::Node(node) => Some(Some(String::from_utf8_lossy(node).into_owned())),
            DirectReplyTo::Unreadable => Some(None),
        }
    }

    #[test]
    fn addresses_seen_on_rabbitmq_3_10_and_4_0_name_their_node() {
        // Taken from the brokers themselves.
        let on_3_10 = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAHUgAAAABrDzYM.JdE0E3p5Yd8Z+BmfXz3m7A==";
        let on_4_0 = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUA5NDgwODcyNAAAAqAAAAAAaw82/Q==.NZ7GfgDhijDqkNgkCGnmxQ==";
        assert_eq!(read(on_3_10), Some(Some("reply@9248884".into())));
        assert_eq!(read(on_4_0), Some(Some("reply@94808724".into())));
    }

    #[test]
    fn queues_are_queues_and_what_the_broker_cannot_decode_is_unreadable() {
        assert_eq!(read("guirpc.replies.7"), None);
        assert_eq!(read("amq.rabbitmq.reply-to-not"), None);
        for hostile in [
            "amq.rabbitmq.reply-to.AAAA.BBBB",
            "amq.rabbitmq.reply-to.!!!!.????",
            "amq.rabbitmq.reply-to.",
            "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAHUgAAAABrDzYM",
            // A pid three bytes short, a key of the wrong size, a node of another shape.
            "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAHUgAAAABr.JdE0E3p5Yd8Z+BmfXz3m7A==",
            "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAHUgAAAABrDzYM.AAAA",
            "amq.rabbitmq.reply-to.g1h2AAZyYWJiaXQAAAdSAAAAAGsPNgw=.JdE0E3p5Yd8Z+BmfXz3m7A==",
            "amq.rabbitmq.reply-to.a.b.c",
        ] {
            assert_eq!(read(hostile), Some(None), "{hostile}");
        }
    }
}
