//! The read pages — a chat's messages page, an application's chat list — served from memory as the
//! exact bytes Postgres's answer encoded to, and kept exact by the writer's commit notifications
//! (`queue::commits`): a hit costs no query, no row decoding and no JSON encoding.
//!
//! What must not break: a read never returns a message (or a count) that is not committed, and a
//! committed message shows on the next read once its notification has arrived (Postgres delivers
//! it right after the commit: typically well under a millisecond later).
//! - Entries are only ever made from a Postgres answer, and only if no change to the same chat or
//!   application was announced while the query ran: [`ReadCache::ticket`] takes the key's stripe
//!   generation before the query, [`ReadCache::store`] stores under the stripe's lock only if it is
//!   unchanged. Applying a change bumps the generation under the same lock, so an answer from
//!   before a commit can never be stored after that commit's notification was applied.
//! - A commit into chat `c` from number `first` drops every cached page of `c` that it could change:
//!   a page changes unless it is full and ends below `first` (numbers only grow at the end, and a
//!   lower number inserted late shifts every page after it). Page 1 of a busy chat therefore stays
//!   cached while messages arrive behind it.
//! - Chat lists are updated in place: a commit raises the chat's `messages_count` to the announced
//!   count (never lowers it: notifications arrive in commit order, counts only grow). A created
//!   chat drops the application's lists.
//! - Without a live notification connection nothing is served or stored: the listener is down, a
//!   notification could be missed. When the connection is lost and re-established, everything
//!   cached is dropped and every outstanding ticket is void ([`ReadCache::reset`]).
//! - Each entry also expires after `READ_CACHE_TTL_MS`: a bound on the damage of anything the
//!   notifications do not cover (a writer of an older version that does not announce its commits).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use metrics::{counter, gauge};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use sqlx::postgres::PgListener;

use common::server::Shutdown;
use queue::commits::{self, Change};

/// Generation stripes: a change bumps its key's stripe; an unrelated key on the same stripe only
/// loses one store.
const STRIPES: usize = 4096;
/// Pages kept per chat or application (the most recently stored).
const PAGES_PER_KEY: usize = 8;

/// What a cache holds per key (a chat's message pages, an application's chat lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Chat(i64),
    Application(i64),
}

impl Key {
    fn stripe(self) -> usize {
        let (id, salt) = match self {
            Key::Chat(id) => (id, 0x243f_6a88_85a3_08d3u64),
            Key::Application(id) => (id, 0x1319_8a2e_0370_7344u64),
        };
        let mixed = (id as u64 ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 52) as usize % STRIPES
    }
}

/// A page as the query asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageKey {
    pub page: i64,
    pub per_page: i64,
}

/// One cached page: its encoded body and what keeping it exact needs (`M`).
#[derive(Debug, Clone)]
pub struct Page<M> {
    pub key: PageKey,
    pub body: Bytes,
    stored: Instant,
    pub meta: M,
}

/// What a commit needs to know of a messages page.
#[derive(Debug, Clone, Copy)]
pub struct MessagesMeta {
    /// The number of its last message (`None`: the page is empty).
    pub last_number: Option<i32>,
    /// It holds `per_page` messages.
    pub full: bool,
}

/// One chat of a cached chat list: what a count update needs.
#[derive(Debug, Clone)]
pub struct ListedChat<T> {
    pub id: i64,
    pub messages_count: i64,
    pub row: T,
}

/// A cached chat list keeps its rows (counts are updated in place, then it is encoded again).
type ChatsMeta<T> = Vec<ListedChat<T>>;

/// The pages of one key, newest last; weighed by their bytes (a chat list's rows are a few dozen
/// bytes each, inside the per-page allowance).
type Pages<M> = Arc<Vec<Page<M>>>;

#[derive(Clone)]
struct ByBytes;

impl<M> Weighter<i64, Pages<M>> for ByBytes {
    fn weight(&self, _: &i64, pages: &Pages<M>) -> u64 {
        64 + pages.iter().map(|p| 256 + p.body.len() as u64).sum::<u64>()
    }
}

/// Proof that no change to a key was applied since it was taken.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    stripe: usize,
    generation: u64,
}

/// The cache. `T` is the chat list's row type; `encode` turns a list of them into a response body.
pub struct ReadCache<T: Clone + Send + Sync + 'static> {
    messages: Cache<i64, Pages<MessagesMeta>, ByBytes>,
    chats: Cache<i64, Pages<ChatsMeta<T>>, ByBytes>,
    stripes: Box<[Mutex<u64>]>,
    live: AtomicBool,
    ttl: Duration,
    encode: fn(&[ListedChat<T>], PageKey) -> Bytes,
}

impl<T: Clone + Send + Sync + 'static> ReadCache<T> {
    /// A cache of at most `bytes` (half for each kind of page), not live until [`listen`] has
    /// subscribed.
    pub fn new(bytes: u64, ttl: Duration, encode: fn(&[ListedChat<T>], PageKey) -> Bytes) -> Self {
        let half = (bytes / 2).max(1);
        Self {
            messages: Cache::with_weighter(10_000, half, ByBytes),
            chats: Cache::with_weighter(10_000, half, ByBytes),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            live: AtomicBool::new(false),
            ttl,
            encode,
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The cached body of a chat's messages page.
    pub fn messages_page(&self, chat_id: i64, key: PageKey) -> Option<Bytes> {
        self.find("messages", || self.messages.get(&chat_id), key)
    }

    /// The cached body of an application's chat list.
    pub fn chats_page(&self, application_id: i64, key: PageKey) -> Option<Bytes> {
        self.find("chats", || self.chats.get(&application_id), key)
    }

    /// The fresh page `key` among `pages` (looked up only while live), counted as a hit or miss.
    fn find<M>(
        &self,
        cache: &'static str,
        pages: impl FnOnce() -> Option<Pages<M>>,
        key: PageKey,
    ) -> Option<Bytes> {
        let hit = self.is_live().then(pages).flatten().and_then(|pages| {
            pages
                .iter()
                .find(|p| p.key == key && p.stored.elapsed() < self.ttl)
                .map(|p| p.body.clone())
        });
        count(cache, hit.is_some());
        hit
    }

    /// Taken before the query whose answer may be stored; `None` while not live.
    pub fn ticket(&self, key: Key) -> Option<Ticket> {
        if !self.is_live() {
            return None;
        }
        let stripe = key.stripe();
        let generation = *lock(&self.stripes[stripe]);
        Some(Ticket { stripe, generation })
    }

    /// Runs `store` under the ticket's stripe lock if nothing changed since the ticket was taken.
    fn store_if_unchanged(&self, ticket: Option<Ticket>, store: impl FnOnce()) {
        let Some(ticket) = ticket else { return };
        let generation = lock(&self.stripes[ticket.stripe]);
        if *generation == ticket.generation && self.is_live() {
            store();
        }
    }

    /// Stores a messages page read from Postgres under `ticket`.
    pub fn store_messages_page(
        &self,
        ticket: Option<Ticket>,
        chat_id: i64,
        key: PageKey,
        last_number: Option<i32>,
        count: usize,
        body: Bytes,
    ) {
        self.store_if_unchanged(ticket, || {
            let page = Page {
                key,
                body,
                stored: Instant::now(),
                meta: MessagesMeta {
                    last_number,
                    full: count as i64 >= key.per_page,
                },
            };
            let pages = with_page(self.messages.get(&chat_id), page);
            self.messages.insert(chat_id, pages);
        });
    }

    /// Stores a chat list read from Postgres under `ticket`; returns its body.
    pub fn store_chats_page(
        &self,
        ticket: Option<Ticket>,
        application_id: i64,
        key: PageKey,
        chats: Vec<ListedChat<T>>,
    ) -> Bytes {
        let body = (self.encode)(&chats, key);
        self.store_if_unchanged(ticket, || {
            let page = Page {
                key,
                body: body.clone(),
                stored: Instant::now(),
                meta: chats,
            };
            let pages = with_page(self.chats.get(&application_id), page);
            self.chats.insert(application_id, pages);
        });
        body
    }

    /// Applies one announced change.
    pub fn apply(&self, change: Change) {
        match change {
            Change::Messages {
                chat_id,
                application_id,
                first,
                messages_count,
            } => {
                {
                    let mut generation = lock(&self.stripes[Key::Chat(chat_id).stripe()]);
                    *generation += 1;
                    if let Some(pages) = self.messages.get(&chat_id) {
                        let kept: Vec<Page<MessagesMeta>> = pages
                            .iter()
                            .filter(|p| {
                                p.meta.full && p.meta.last_number.is_some_and(|l| l < first)
                            })
                            .cloned()
                            .collect();
                        if kept.is_empty() {
                            self.messages.remove(&chat_id);
                        } else if kept.len() != pages.len() {
                            self.messages.insert(chat_id, Arc::new(kept));
                        }
                    }
                }
                let mut generation = lock(&self.stripes[Key::Application(application_id).stripe()]);
                *generation += 1;
                if let Some(pages) = self.chats.get(&application_id) {
                    let updated: Vec<Page<ChatsMeta<T>>> = pages
                        .iter()
                        .map(|page| self.with_count(page, chat_id, messages_count))
                        .collect();
                    self.chats.insert(application_id, Arc::new(updated));
                }
            }
            Change::Chats { application_id } => {
                let mut generation = lock(&self.stripes[Key::Application(application_id).stripe()]);
                *generation += 1;
                self.chats.remove(&application_id);
            }
        }
    }

    /// `page` with the chat's count raised to `messages_count` (encoded again if it changed).
    fn with_count(
        &self,
        page: &Page<ChatsMeta<T>>,
        chat_id: i64,
        messages_count: i64,
    ) -> Page<ChatsMeta<T>> {
        let mut page = page.clone();
        let mut changed = false;
        for chat in page.meta.iter_mut().filter(|c| c.id == chat_id) {
            if chat.messages_count < messages_count {
                chat.messages_count = messages_count;
                changed = true;
            }
        }
        if changed {
            page.body = (self.encode)(&page.meta, page.key);
        }
        page
    }

    /// Drops everything and voids every outstanding ticket; `live` says whether the cache serves
    /// and stores afterwards.
    pub fn reset(&self, live: bool) {
        self.live.store(false, Ordering::Release);
        for stripe in self.stripes.iter() {
            *lock(stripe) += 1;
        }
        self.messages.clear();
        self.chats.clear();
        self.live.store(live, Ordering::Release);
        gauge!("chat_read_cache_live").set(if live { 1.0 } else { 0.0 });
    }
}

fn lock(stripe: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    // A poisoned stripe only means a panic while it was held; the counter is still valid.
    stripe.lock().unwrap_or_else(|e| e.into_inner())
}

fn count(cache: &'static str, hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    counter!("chat_read_cache_total", "cache" => cache, "outcome" => outcome).increment(1);
}

/// `current` with `page` added (replacing the one of the same key), at most [`PAGES_PER_KEY`].
fn with_page<M: Clone>(current: Option<Pages<M>>, page: Page<M>) -> Pages<M> {
    let mut pages: Vec<Page<M>> = current
        .map(|pages| {
            pages
                .iter()
                .filter(|p| p.key != page.key)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if pages.len() >= PAGES_PER_KEY {
        pages.remove(0);
    }
    pages.push(page);
    Arc::new(pages)
}

/// Subscribes to the writer's commit notifications and applies them until shutdown; the cache is
/// live only while subscribed. A lost connection is re-established (with backoff while Postgres
/// is down) and the cache starts empty again.
pub async fn listen<T: Clone + Send + Sync + 'static>(
    url: String,
    cache: Arc<ReadCache<T>>,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut listener = PgListener::connect(&url).await?;
            // A lost connection is reported at once (not after a silent reconnect): the cache
            // stops serving then, and is live again only once the new LISTEN is active.
            listener.eager_reconnect(false);
            listener.listen(commits::CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = shutdown.token.cancelled() => return,
            subscribed = subscribed => match subscribed {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "read cache: cannot subscribe to commits");
                    tokio::select! {
                        _ = shutdown.token.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(100);
        // Subscribed: every commit from here on is announced to this connection.
        cache.reset(true);
        tracing::info!("read cache: live");
        loop {
            let next = tokio::select! {
                _ = shutdown.token.cancelled() => return,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(notification)) => match commits::parse(notification.payload()) {
                    Ok(changes) => changes.into_iter().for_each(|c| cache.apply(c)),
                    Err(e) => {
                        tracing::warn!(error = %e, "read cache: unreadable commit notification; dropping everything");
                        cache.reset(true);
                    }
                },
                // The connection was lost: what is announced until a new LISTEN is active is
                // unknown, so nothing is served until then.
                Ok(None) => {
                    tracing::warn!(
                        "read cache: commit notifications interrupted; dropping everything"
                    );
                    cache.reset(false);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "read cache: lost the commit notifications");
                    cache.reset(false);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chats: &[ListedChat<i32>], _: PageKey) -> Bytes {
        let counts: Vec<String> = chats
            .iter()
            .map(|c| format!("{}:{}", c.row, c.messages_count))
            .collect();
        Bytes::from(counts.join(","))
    }

    fn cache() -> ReadCache<i32> {
        let cache = ReadCache::new(1 << 20, Duration::from_secs(60), encode);
        cache.reset(true);
        cache
    }

    const P1: PageKey = PageKey {
        page: 1,
        per_page: 2,
    };
    const P2: PageKey = PageKey {
        page: 2,
        per_page: 2,
    };

    fn commit(chat_id: i64, first: i32, messages_count: i64) -> Change {
        Change::Messages {
            chat_id,
            application_id: 1,
            first,
            messages_count,
        }
    }

    #[test]
    fn a_commit_drops_the_pages_it_can_change_and_keeps_full_pages_before_it() {
        let c = cache();
        let t = c.ticket(Key::Chat(7));
        c.store_messages_page(t, 7, P1, Some(2), 2, Bytes::from("1,2"));
        let t = c.ticket(Key::Chat(7));
        c.store_messages_page(t, 7, P2, Some(4), 1, Bytes::from("4"));
        assert_eq!(c.messages_page(7, P1).as_deref(), Some(&b"1,2"[..]));
        // Number 5 lands after page 1 (full, ends at 2) and on page 2 (not full).
        c.apply(commit(7, 5, 4));
        assert_eq!(c.messages_page(7, P1).as_deref(), Some(&b"1,2"[..]));
        assert_eq!(c.messages_page(7, P2), None);
        // Number 3 committed late shifts page 2 — and would any page ending after it.
        let t = c.ticket(Key::Chat(7));
        c.store_messages_page(t, 7, P2, Some(5), 2, Bytes::from("4,5"));
        c.apply(commit(7, 2, 5));
        assert_eq!(c.messages_page(7, P1), None);
        assert_eq!(c.messages_page(7, P2), None);
        // Another chat is untouched.
        let t = c.ticket(Key::Chat(8));
        c.store_messages_page(t, 8, P1, None, 0, Bytes::from(""));
        c.apply(commit(7, 9, 6));
        assert!(c.messages_page(8, P1).is_some());
    }

    #[test]
    fn an_answer_from_before_a_change_is_never_stored_after_it() {
        let c = cache();
        let before = c.ticket(Key::Chat(7));
        c.apply(commit(7, 1, 1));
        c.store_messages_page(before, 7, P1, None, 0, Bytes::from("stale"));
        assert_eq!(c.messages_page(7, P1), None);
        let before = c.ticket(Key::Application(1));
        c.apply(Change::Chats { application_id: 1 });
        let chats = vec![ListedChat {
            id: 7,
            messages_count: 0,
            row: 1,
        }];
        let body = c.store_chats_page(before, 1, P1, chats);
        assert_eq!(&body[..], b"1:0", "the answer itself is still returned");
        assert_eq!(c.chats_page(1, P1), None);
        // A reset voids every ticket.
        let before = c.ticket(Key::Chat(9));
        c.reset(true);
        c.store_messages_page(before, 9, P1, None, 0, Bytes::from("x"));
        assert_eq!(c.messages_page(9, P1), None);
    }

    #[test]
    fn chat_lists_take_announced_counts_in_place_and_never_go_back() {
        let c = cache();
        let t = c.ticket(Key::Application(1));
        let chats = vec![
            ListedChat {
                id: 7,
                messages_count: 3,
                row: 1,
            },
            ListedChat {
                id: 8,
                messages_count: 0,
                row: 2,
            },
        ];
        c.store_chats_page(t, 1, P1, chats);
        c.apply(commit(7, 4, 10));
        assert_eq!(c.chats_page(1, P1).as_deref(), Some(&b"1:10,2:0"[..]));
        c.apply(commit(7, 4, 9));
        assert_eq!(c.chats_page(1, P1).as_deref(), Some(&b"1:10,2:0"[..]));
        c.apply(Change::Chats { application_id: 1 });
        assert_eq!(c.chats_page(1, P1), None);
    }

    #[test]
    fn nothing_is_served_or_stored_while_not_live_and_entries_expire() {
        let c = cache();
        let t = c.ticket(Key::Chat(7));
        c.store_messages_page(t, 7, P1, Some(2), 2, Bytes::from("1,2"));
        c.reset(false);
        assert_eq!(c.ticket(Key::Chat(7)).map(|_| ()), None);
        c.store_messages_page(t, 7, P1, Some(2), 2, Bytes::from("1,2"));
        assert_eq!(c.messages_page(7, P1), None);
        let c = ReadCache::new(1 << 20, Duration::ZERO, encode);
        c.reset(true);
        let t = c.ticket(Key::Chat(7));
        c.store_messages_page(t, 7, P1, Some(2), 2, Bytes::from("1,2"));
        assert_eq!(c.messages_page(7, P1), None, "expired at once");
    }

    #[test]
    fn a_key_keeps_its_newest_pages() {
        let c = cache();
        for page in 1..=(PAGES_PER_KEY as i64 + 2) {
            let t = c.ticket(Key::Chat(7));
            let key = PageKey { page, per_page: 2 };
            c.store_messages_page(t, 7, key, Some(1), 2, Bytes::from("x"));
        }
        assert_eq!(c.messages_page(7, P1), None);
        let last = PageKey {
            page: PAGES_PER_KEY as i64 + 2,
            per_page: 2,
        };
        assert!(c.messages_page(7, last).is_some());
    }
}
