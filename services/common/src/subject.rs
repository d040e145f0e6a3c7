//! Subject names: what may be published to, subscribed to, and how they map to Redis channels.
//!
//! Published subjects are 1–128 of `[A-Za-z0-9_.-]`; subscriptions may also use Redis glob
//! characters (`*`, `?`, `[...]`), which makes them patterns (PSUBSCRIBE). Backslash escapes are
//! refused so a pattern always means what it reads. The Redis channel is `PUBSUB_PREFIX + subject`.

pub const MAX_SUBJECT_LEN: usize = 128;
pub const MAX_CHANNEL_ID_LEN: usize = 64;
pub const DEFAULT_SUBJECT: &str = "storm.events";

fn is_subject_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn is_glob_char(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '^')
}

/// Why a published subject is refused, or `Ok` for a valid one.
pub fn check_publish(subject: &str) -> Result<(), String> {
    check_len(subject)?;
    if let Some(c) = subject.chars().find(|c| !is_subject_char(*c)) {
        return Err(if is_glob_char(c) {
            format!(
                "subject {subject:?} contains the wildcard {c:?}; publish to a concrete subject"
            )
        } else {
            format!("subject {subject:?} contains {c:?}; allowed are A-Z a-z 0-9 _ . -")
        });
    }
    Ok(())
}

/// Why a subscription subject or pattern is refused, or `Ok`.
pub fn check_subscribe(subject: &str) -> Result<(), String> {
    check_len(subject)?;
    if let Some(c) = subject
        .chars()
        .find(|c| !is_subject_char(*c) && !is_glob_char(*c))
    {
        return Err(format!(
            "subject {subject:?} contains {c:?}; allowed are A-Z a-z 0-9 _ . - and the globs * ? [ ] ^"
        ));
    }
    Ok(())
}

fn check_len(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject is empty".into());
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(format!(
            "subject is {} characters; at most {MAX_SUBJECT_LEN}",
            subject.len()
        ));
    }
    Ok(())
}

/// True when the subscription is a Redis glob pattern (PSUBSCRIBE) rather than an exact channel.
pub fn is_pattern(subject: &str) -> bool {
    subject.contains(['*', '?', '['])
}

/// `channel.{id}` for a channel id of 1–64 of `[A-Za-z0-9_-]`.
pub fn channel_subject(channel_id: &str) -> Result<String, String> {
    let valid = !channel_id.is_empty()
        && channel_id.len() <= MAX_CHANNEL_ID_LEN
        && channel_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if valid {
        Ok(format!("channel.{channel_id}"))
    } else {
        Err(format!(
            "channel id {channel_id:?} must be 1–{MAX_CHANNEL_ID_LEN} of A-Z a-z 0-9 _ -"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn publish_subjects() {
        assert!(check_publish("storm.events").is_ok());
        assert!(check_publish("call.initiated").is_ok());
        assert!(check_publish(&"a".repeat(128)).is_ok());
        for bad in ["", "a*", "call.>", "a b", "a/b", "é", "a\\b", "x?"] {
            assert!(check_publish(bad).is_err(), "{bad:?}");
        }
        assert!(check_publish(&"a".repeat(129)).is_err());
    }

    #[test]
    fn subscribe_patterns() {
        assert!(check_subscribe("call.*").is_ok() && is_pattern("call.*"));
        assert!(check_subscribe("call.[ar]*").is_ok());
        assert!(!is_pattern("storm.events"));
        assert!(check_subscribe("a\\*").is_err());
        assert!(check_subscribe("a b").is_err());
    }

    #[test]
    fn channel_ids() {
        assert_eq!(channel_subject("general-1").unwrap(), "channel.general-1");
        for bad in ["", "a.b", "a*", &"x".repeat(65)] {
            assert!(channel_subject(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn valid_publish_subjects_are_valid_subscriptions(s in "[A-Za-z0-9_.-]{1,128}") {
            prop_assert!(check_publish(&s).is_ok());
            prop_assert!(check_subscribe(&s).is_ok());
            prop_assert!(!is_pattern(&s));
        }

        #[test]
        fn checks_never_panic(s in "\\PC{0,200}") {
            let _ = check_publish(&s);
            let _ = check_subscribe(&s);
            let _ = channel_subject(&s);
        }
    }
}
