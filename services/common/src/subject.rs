//! Subject names: what may be published to, subscribed to, and how they map to Redis channels.
//!
//! Published subjects are 1–128 of `[A-Za-z0-9_.-]`; subscriptions may also use Redis glob
//! characters (`*`, `?`, `[...]`), which makes them patterns (PSUBSCRIBE). Backslash escapes are
//! refused so a pattern always means what it reads. The Redis channel is `PUBSUB_PREFIX + subject`.
//!
//! Tenant scoping (SPEC "Isolation and safe defaults"): call events are published on
//! `call.{tenant}.{state}` and every subscription passes through [`scope_subscription`], the one
//! place that decides what a socket may hear. A subscription starting with the literal `call.` is
//! rewritten to `call.{its tenant}.` + the rest, so it can only ever match its own tenant's
//! subjects; any other pattern that could match a `call.` subject is refused, decided by
//! [`could_match_prefix`] over the exact glob grammar Redis uses (`redis_glob` is a port of its
//! matcher, the reference the property tests hold the check to). What must not break: a pattern
//! that survives this function can never match another tenant's `call.` subject.

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

/// The namespaces only services publish to (the messages service: `call.`, `channel.`), and the
/// bare names; the public publish routes refuse them.
pub const RESERVED_NAMESPACES: [&str; 2] = ["call", "channel"];

/// The reserved namespace `subject` falls in (`call` for `call` and `call.…`), if any.
pub fn reserved_namespace(subject: &str) -> Option<&'static str> {
    RESERVED_NAMESPACES.into_iter().find(|ns| {
        subject
            .strip_prefix(ns)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// The tenant-scoped namespace: subjects under it carry the tenant as their second part.
pub const CALL_PREFIX: &str = "call.";

/// `call.{state}` → `call.{tenant}.{state}`: where a tenant's call event goes on Redis, and what a
/// socket of that tenant subscribing to `call.{state}` (or a `call.` pattern) holds. Subjects
/// outside `call.` are returned as they are.
pub fn tenant_subject(subject: &str, tenant: uuid::Uuid) -> String {
    match subject.strip_prefix(CALL_PREFIX) {
        Some(rest) => format!("{CALL_PREFIX}{tenant}.{rest}"),
        None => subject.to_string(),
    }
}

/// Why a subscription is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid subject or pattern (400).
    Invalid(String),
    /// Only wildcards (`*`, `*.*`, `?*`, `[a-z]*`): would match everything (400).
    WildcardOnly(String),
    /// A `call.` subscription from a token without a tenant (403).
    NeedsTenant(String),
    /// A pattern that could match some tenant's `call.` subjects (403).
    CrossTenant(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Invalid(m)
            | Refusal::WildcardOnly(m)
            | Refusal::NeedsTenant(m)
            | Refusal::CrossTenant(m) => m,
        }
    }

    /// The answer's status and code, for the upgrade's error envelope and an op's error frame
    /// alike: 400 `bad_request` for what is not a usable subscription, 403 `forbidden` for what
    /// the isolation rules refuse.
    pub fn status_and_code(&self) -> (http::StatusCode, &'static str) {
        match self {
            Refusal::Invalid(_) | Refusal::WildcardOnly(_) => {
                (http::StatusCode::BAD_REQUEST, "bad_request")
            }
            Refusal::NeedsTenant(_) | Refusal::CrossTenant(_) => {
                (http::StatusCode::FORBIDDEN, "forbidden")
            }
        }
    }

    /// The metric label (`gateway_ws_refusals_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid",
            Refusal::WildcardOnly(_) => "wildcard_only",
            Refusal::NeedsTenant(_) => "needs_tenant",
            Refusal::CrossTenant(_) => "cross_tenant",
        }
    }
}

impl From<Refusal> for crate::ApiError {
    fn from(refusal: Refusal) -> Self {
        let (status, code) = refusal.status_and_code();
        crate::ApiError::new(status, code, refusal.message())
    }
}

/// The one mapping from what a socket asks for to what it is subscribed to (see the module doc):
/// invalid → refused; wildcard-only → refused; literal `call.` prefix → `call.{tenant}.` + rest,
/// refused without a tenant; any other pattern that could match a `call.` subject → refused;
/// anything else unchanged. Subscribe and unsubscribe both map through here.
pub fn scope_subscription(subject: &str, tenant: Option<uuid::Uuid>) -> Result<String, Refusal> {
    check_subscribe(subject).map_err(Refusal::Invalid)?;
    let tokens = glob_tokens(subject.as_bytes());
    let has_literal = tokens
        .iter()
        .any(|t| matches!(t, Token::Literal(c) if *c != b'.'));
    if !has_literal {
        return Err(Refusal::WildcardOnly(format!(
            "subscription {subject:?} is only wildcards; name at least part of a subject (e.g. storm.*)"
        )));
    }
    if subject.starts_with(CALL_PREFIX) {
        return match tenant {
            Some(tenant) => Ok(tenant_subject(subject, tenant)),
            None => Err(Refusal::NeedsTenant(format!(
                "call events are per tenant: subscribing to {subject:?} needs a token with a tenant claim"
            ))),
        };
    }
    if is_pattern(subject) && could_match_prefix(subject, CALL_PREFIX) {
        return Err(Refusal::CrossTenant(format!(
            "pattern {subject:?} could match call events of other tenants; subscribe to call.… (your tenant's) instead"
        )));
    }
    Ok(subject.to_string())
}

/// Characters a published subject may contain: the alphabet the feasibility check ranges over.
const SUBJECT_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";

/// One element of a Redis glob, as Redis's `stringmatchlen` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*` (runs of stars are one).
    Star,
    /// `?`: any one character.
    Any,
    /// `[...]` / `[^...]`: one character of the set (256 flags, negation applied).
    Set(Box<[bool; 256]>),
    Literal(u8),
}

/// Splits a pattern into tokens exactly as Redis walks it (util.c `stringmatchlen`), quirks
/// included: an unterminated `[` takes the rest of the pattern as its set, and `x-y` is a range
/// wherever two more characters follow, even when the second is `]` (`[a-]` does not end there).
/// Backslashes are refused by [`check_subscribe`]; here they escape as in Redis.
fn glob_tokens(pattern: &[u8]) -> Vec<Token> {
    let at = |i: usize| pattern.get(i).copied().unwrap_or(0);
    let len = pattern.len();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < len {
        match pattern[i] {
            b'*' => {
                while i + 1 < len && pattern[i + 1] == b'*' {
                    i += 1;
                }
                tokens.push(Token::Star);
            }
            b'?' => tokens.push(Token::Any),
            b'[' => {
                i += 1;
                let negate = at(i) == b'^';
                if negate {
                    i += 1;
                }
                let mut set = Box::new([false; 256]);
                loop {
                    let remaining = len.saturating_sub(i);
                    if at(i) == b'\\' && remaining >= 2 {
                        i += 1;
                        set[at(i) as usize] = true;
                    } else if at(i) == b']' && remaining > 0 {
                        break;
                    } else if remaining == 0 {
                        // Redis steps back so the loop's final step lands on the end.
                        i -= 1;
                        break;
                    } else if remaining >= 3 && at(i + 1) == b'-' {
                        let (a, b) = (at(i), at(i + 2));
                        let (start, end) = if a > b { (b, a) } else { (a, b) };
                        for c in start..=end {
                            set[c as usize] = true;
                        }
                        i += 2;
                    } else {
                        set[at(i) as usize] = true;
                    }
                    i += 1;
                }
                if negate {
                    for flag in set.iter_mut() {
                        *flag = !*flag;
                    }
                }
                tokens.push(Token::Set(set));
            }
            b'\\' if i + 1 < len => {
                i += 1;
                tokens.push(Token::Literal(pattern[i]));
            }
            c => tokens.push(Token::Literal(c)),
        }
        i += 1;
    }
    tokens
}

fn token_accepts(token: &Token, c: u8) -> bool {
    match token {
        Token::Star | Token::Any => true,
        Token::Set(set) => set[c as usize],
        Token::Literal(l) => *l == c,
    }
}

/// Positions reachable by following stars (which may match nothing).
fn close_over_stars(tokens: &[Token], states: &mut [bool]) {
    for i in 0..tokens.len() {
        if states[i] && tokens[i] == Token::Star {
            states[i + 1] = true;
        }
    }
}

/// The token positions the pattern can be at after reading `input`.
fn states_after(tokens: &[Token], input: &[u8]) -> Vec<bool> {
    let mut states = vec![false; tokens.len() + 1];
    states[0] = true;
    close_over_stars(tokens, &mut states);
    for &c in input {
        let mut next = vec![false; tokens.len() + 1];
        for i in 0..tokens.len() {
            if states[i] && token_accepts(&tokens[i], c) {
                if tokens[i] == Token::Star {
                    next[i] = true;
                } else {
                    next[i + 1] = true;
                }
            }
        }
        close_over_stars(tokens, &mut next);
        states = next;
    }
    states
}

/// True when `tokens[from..]` matches some string of subject characters.
fn completable(tokens: &[Token], from: usize) -> bool {
    tokens[from..].iter().all(|t| match t {
        Token::Set(set) => SUBJECT_ALPHABET.iter().any(|c| set[*c as usize]),
        Token::Literal(c) => SUBJECT_ALPHABET.contains(c),
        Token::Star | Token::Any => true,
    })
}

/// Whether the Redis glob `pattern` matches a string of subject characters (`[A-Za-z0-9_.-]`)
/// that starts with `prefix`: the feasibility check behind [`scope_subscription`].
pub fn could_match_prefix(pattern: &str, prefix: &str) -> bool {
    prefix_witness(pattern, prefix).is_some()
}

/// A string of subject characters starting with `prefix` that `pattern` matches, if there is one.
pub fn prefix_witness(pattern: &str, prefix: &str) -> Option<String> {
    let tokens = glob_tokens(pattern.as_bytes());
    let states = states_after(&tokens, prefix.as_bytes());
    let from = (0..=tokens.len()).find(|&i| states[i] && completable(&tokens, i))?;
    let mut witness = prefix.as_bytes().to_vec();
    for token in &tokens[from..] {
        match token {
            Token::Star => {}
            Token::Any => witness.push(b'a'),
            Token::Literal(c) => witness.push(*c),
            Token::Set(set) => witness.extend(SUBJECT_ALPHABET.iter().find(|c| set[**c as usize])),
        }
    }
    String::from_utf8(witness).ok()
}

/// Whether the Redis glob `pattern` matches `text` (the token automaton; tests hold it to
/// [`redis_glob`]).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let tokens = glob_tokens(pattern.as_bytes());
    states_after(&tokens, text.as_bytes())[tokens.len()]
}

/// A line-by-line port of Redis's `stringmatchlen` (util.c, case-sensitive): the reference matcher.
#[doc(hidden)]
pub fn redis_glob(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    redis_glob_impl(pattern, string, &mut skip_longer, 0)
}

fn redis_glob_impl(pattern: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    // C reads past the end as NUL; so does `at`.
    let at = |p: &[u8], i: usize| p.get(i).copied().unwrap_or(0);
    if nesting > 1000 {
        return false;
    }
    let (mut p, mut s) = (0usize, 0usize);
    let (plen, slen) = (pattern.len(), string.len());
    while p < plen && s < slen {
        match pattern[p] {
            b'*' => {
                while p < plen && at(pattern, p + 1) == b'*' {
                    p += 1;
                }
                if plen - p == 1 {
                    return true;
                }
                while s < slen {
                    if redis_glob_impl(&pattern[p + 1..], &string[s..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    let remaining = plen as isize - p as isize;
                    if at(pattern, p) == b'\\' && remaining >= 2 {
                        p += 1;
                        if at(pattern, p) == string[s] {
                            matched = true;
                        }
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if remaining == 0 {
                        p -= 1;
                        break;
                    } else if remaining >= 3 && at(pattern, p + 1) == b'-' {
                        let (mut start, mut end) = (at(pattern, p), at(pattern, p + 2));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        if (start..=end).contains(&string[s]) {
                            matched = true;
                        }
                    } else if at(pattern, p) == string[s] {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            c => {
                let c = if c == b'\\' && plen - p >= 2 {
                    p += 1;
                    pattern[p]
                } else {
                    c
                };
                if c != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == slen {
            while at(pattern, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= plen && s == slen
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

    #[test]
    fn reserved_namespaces() {
        for reserved in [
            "call",
            "call.x",
            "call.answered",
            "channel",
            "channel.general",
        ] {
            assert!(reserved_namespace(reserved).is_some(), "{reserved}");
        }
        assert_eq!(reserved_namespace("call.x"), Some("call"));
        assert_eq!(reserved_namespace("channel.general"), Some("channel"));
        for free in [
            "calls",
            "callx.y",
            "channels.a",
            "storm.events",
            "room.call",
        ] {
            assert_eq!(reserved_namespace(free), None, "{free}");
        }
    }

    const TENANT: uuid::Uuid = uuid::Uuid::from_u128(0xa1);

    #[test]
    fn call_subscriptions_are_scoped_to_the_tenant() {
        let t = TENANT;
        assert_eq!(
            scope_subscription("call.*", Some(t)).unwrap(),
            format!("call.{t}.*")
        );
        assert_eq!(
            scope_subscription("call.initiated", Some(t)).unwrap(),
            format!("call.{t}.initiated")
        );
        // Naming another tenant only nests it under one's own.
        let other = uuid::Uuid::from_u128(0xb2);
        assert_eq!(
            scope_subscription(&format!("call.{other}.initiated"), Some(t)).unwrap(),
            format!("call.{t}.{other}.initiated")
        );
        assert_eq!(
            tenant_subject("call.answered", t),
            format!("call.{t}.answered")
        );
        assert_eq!(tenant_subject("storm.events", t), "storm.events");
        for tenantless in ["call.*", "call.initiated", "call.[a-z]*"] {
            let refusal = scope_subscription(tenantless, None).unwrap_err();
            assert!(matches!(refusal, Refusal::NeedsTenant(_)), "{tenantless}");
        }
    }

    #[test]
    fn patterns_that_could_reach_call_subjects_are_refused() {
        for tenant in [None, Some(TENANT)] {
            for cross in [
                "*.initiated",
                "c*",
                "[c]all.*",
                "ca?l.*",
                "[^x]all.*",
                "*all.*",
                "*-*",
                "c[a-b]ll*",
                "*initiated",
                "?all*",
            ] {
                let refusal = scope_subscription(cross, tenant).unwrap_err();
                assert!(
                    matches!(refusal, Refusal::CrossTenant(_)),
                    "{cross}: {refusal:?}"
                );
            }
            for wild in ["*", "*.*", "?*", "[a-z]*", "**", "?", "[^.]*.*"] {
                let refusal = scope_subscription(wild, tenant).unwrap_err();
                assert!(
                    matches!(refusal, Refusal::WildcardOnly(_)),
                    "{wild}: {refusal:?}"
                );
            }
            for fine in [
                "storm.events",
                "storm.*",
                "fan.*",
                "room.1",
                "call",
                "channel.*",
                "[d]all.*",
                "x*",
            ] {
                assert_eq!(scope_subscription(fine, tenant).unwrap(), fine, "{fine}");
            }
            assert!(matches!(
                scope_subscription("a b", tenant),
                Err(Refusal::Invalid(_))
            ));
        }
    }

    #[test]
    fn redis_glob_quirks() {
        // An unterminated bracket takes the rest of the pattern as its set.
        assert!(redis_glob(b"x[ab", b"xb"));
        assert!(glob_matches("x[ab", "xb"));
        // `a-]` is a range up to `]`, so the bracket does not end there.
        assert!(redis_glob(b"[a-]x]", b"_"));
        assert!(glob_matches("[a-]x]", "_"));
        assert!(!glob_matches("[]", "]"));
        assert!(glob_matches("[^", "z"));
        assert!(glob_matches("call.*", "call.x.y"));
        assert!(!glob_matches("call.*", "calls"));
    }

    /// Subscription-shaped patterns over a small alphabet rich in glob syntax and `call.`'s letters.
    fn small_pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("c"),
                Just("a"),
                Just("l"),
                Just("."),
                Just("-"),
                Just("x"),
                Just("*"),
                Just("?"),
                Just("["),
                Just("]"),
                Just("^"),
                Just("call."),
                Just("[a-z]"),
                Just("[^x]"),
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn token_automaton_agrees_with_redis(p in small_pattern(), s in "[acl.x\\-\\]\\^]{1,10}") {
            prop_assert_eq!(glob_matches(&p, &s), redis_glob(p.as_bytes(), s.as_bytes()), "{} vs {}", p, s);
        }

        #[test]
        fn feasibility_never_misses_a_call_subject(p in small_pattern()) {
            // Every suffix of up to three characters over an alphabet that the patterns use.
            let alphabet = ["a", "c", "l", ".", "-", "x", "z"];
            let mut suffixes = vec![String::new()];
            for _ in 0..3 {
                let longer: Vec<String> = suffixes.iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                suffixes.extend(longer);
            }
            suffixes.sort();
            suffixes.dedup();
            let feasible = could_match_prefix(&p, "call.");
            for suffix in suffixes {
                let subject = format!("call.{suffix}");
                if redis_glob(p.as_bytes(), subject.as_bytes()) {
                    prop_assert!(feasible, "{} matches {} but was judged unable to", p, subject);
                }
            }
            if let Some(witness) = prefix_witness(&p, "call.") {
                prop_assert!(witness.starts_with("call."));
                prop_assert!(check_publish(&witness).is_ok() || witness.len() > MAX_SUBJECT_LEN, "{}", witness);
                prop_assert!(redis_glob(p.as_bytes(), witness.as_bytes()), "{} does not match its witness {}", p, witness);
            }
        }

        #[test]
        fn scoped_subscriptions_never_reach_another_tenant(
            p in small_pattern(),
            state in "[a-z]{1,10}",
        ) {
            let mine = TENANT;
            let theirs = uuid::Uuid::from_u128(0xb2);
            let their_subject = format!("call.{theirs}.{state}");
            if let Ok(scoped) = scope_subscription(&p, Some(mine)) {
                prop_assert!(!redis_glob(scoped.as_bytes(), their_subject.as_bytes()), "{} → {}", p, scoped);
            }
            if let Ok(scoped) = scope_subscription(&p, None) {
                prop_assert!(!redis_glob(scoped.as_bytes(), their_subject.as_bytes()), "{} → {}", p, scoped);
            }
        }

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
            let _ = scope_subscription(&s, None);
            let _ = could_match_prefix(&s, "call.");
            let _ = redis_glob(s.as_bytes(), b"call.x");
        }
    }
}
