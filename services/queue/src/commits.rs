//! The writer → chat service contract: what a commit changed, announced with Postgres `NOTIFY` on
//! [`CHANNEL`] inside the committing statement, so a listener hears it only once the rows are
//! committed (Postgres delivers notifications after the commit, in commit order). The chat
//! service's read cache (`chat::read_cache`) is kept exact by it.
//!
//! Payload: entries separated by `,`, each one of
//! - `c{chat_id}:{application_id}:{first}:{messages_count}` — the statement inserted messages into
//!   the chat; `first` is the lowest number it inserted, `messages_count` the chat's count after it;
//! - `a{application_id}` — the application's chat list changed (a chat was created).
//!
//! A payload stays under Postgres's 8,000-byte limit: the writer sends at most [`ENTRIES_PER_NOTIFY`]
//! entries per notification (an entry is at most 72 bytes).

/// The `LISTEN`/`NOTIFY` channel.
pub const CHANNEL: &str = "storm_chat_commits";

/// Most entries in one notification: 100 × 72 bytes < 8,000.
pub const ENTRIES_PER_NOTIFY: usize = 100;

/// One change a commit made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Messages numbered `first` and up were inserted into the chat; it now counts `messages_count`.
    Messages {
        chat_id: i64,
        application_id: i64,
        first: i32,
        messages_count: i64,
    },
    /// The application's chat list changed.
    Chats { application_id: i64 },
}

/// The changes of one payload; `Err` names the first entry that is not one (the listener then
/// treats the notification as "anything may have changed").
pub fn parse(payload: &str) -> Result<Vec<Change>, String> {
    payload
        .split(',')
        .filter(|entry| !entry.is_empty())
        .map(|entry| parse_entry(entry).ok_or_else(|| format!("bad commit entry {entry:?}")))
        .collect()
}

fn parse_entry(entry: &str) -> Option<Change> {
    if let Some(rest) = entry.strip_prefix('c') {
        let mut fields = rest.split(':');
        let change = Change::Messages {
            chat_id: fields.next()?.parse().ok()?,
            application_id: fields.next()?.parse().ok()?,
            first: fields.next()?.parse().ok()?,
            messages_count: fields.next()?.parse().ok()?,
        };
        return fields.next().is_none().then_some(change);
    }
    let application_id = entry.strip_prefix('a')?.parse().ok()?;
    Some(Change::Chats { application_id })
}

/// The payload announcing that `application_id`'s chat list changed.
pub fn chats_changed(application_id: i64) -> String {
    format!("a{application_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_into_changes() {
        assert_eq!(
            parse("c12:3:40:57,c13:3:1:1,a9").unwrap(),
            vec![
                Change::Messages {
                    chat_id: 12,
                    application_id: 3,
                    first: 40,
                    messages_count: 57
                },
                Change::Messages {
                    chat_id: 13,
                    application_id: 3,
                    first: 1,
                    messages_count: 1
                },
                Change::Chats { application_id: 9 },
            ]
        );
        assert_eq!(
            parse(&chats_changed(7)).unwrap(),
            vec![Change::Chats { application_id: 7 }]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        for bad in [
            "c1:2:3",
            "c1:2:3:4:5",
            "x1",
            "a",
            "cA:1:1:1",
            "c1:2:99999999999:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_entry_fits_the_notify_limit() {
        let entry = format!("c{}:{}:{}:{},", i64::MAX, i64::MAX, i32::MAX, i64::MAX);
        assert!(entry.len() <= 72, "{}", entry.len());
        assert!(entry.len() * ENTRIES_PER_NOTIFY < 8000);
    }
}
