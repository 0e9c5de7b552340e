//! Services' rendered variables, kept after a review first renders them, within a
//! process-wide byte budget.
//!
//! The catalog keeps each Service as the recipe of its variables (~150 bytes instead of
//! ~470 for two ports), which is what keeps 100,000 Services within issue 16's memory target.
//! The price is paid per review: rendering a Service's variables from its recipe is ~0.15 µs
//! per variable, a third of a whole S2 decision (657 variables; BENCHMARKS.md, "Rendered
//! variables kept"). Most clusters' reviews inject the same few hundred Services again and
//! again, so the first review that renders a Service leaves the result with it, and later
//! reviews copy it. The budget ([`LIMIT`], 4 MiB: ~6,500 two-port Services) bounds what that
//! adds to the catalog whatever the reviews ask for; a Service that finds the budget spent is
//! rendered every time, as before. An entry lives and dies with its Service: an update
//! replaces the Service (and so the entry), and dropping it returns its bytes to the budget.
//!
//! No lock is held across work: a review reads a slot with one atomic load; it fills an
//! empty one with `OnceLock::set` after rendering, which at most waits for another review's
//! `set` of the same slot (storing a pointer), and the budget is one atomic counter.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Span;

/// The process-wide budget for rendered variables kept with Services: 4 MiB.
pub const LIMIT: usize = 4 << 20;

/// Bytes counted against a limit, shared by every entry that draws from it.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// An empty budget of `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes held now by entries.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit.
    fn take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The budget every Service of the process draws from.
pub static PROCESS_BUDGET: Budget = Budget::new(LIMIT);

/// Bytes of rendered variables held with Services now, process-wide (the
/// `envlink_render_cache_bytes` gauge).
pub fn held_bytes() -> usize {
    PROCESS_BUDGET.held()
}

/// A Service's variables as [`super::Rendered`] holds them: the JSON objects, and where each
/// variable sits, counted from the start of `text`.
pub(super) struct Block {
    pub(super) text: Box<str>,
    pub(super) spans: Box<[Span]>,
    /// What the block counts against its budget, given back when it is dropped.
    cost: usize,
    budget: &'static Budget,
}

impl Drop for Block {
    fn drop(&mut self) {
        self.budget.give_back(self.cost);
    }
}

/// The slot a Service keeps its rendered variables in: empty until a review renders them
/// and the budget has room; written once, then read without a lock.
#[derive(Default)]
pub(super) struct RenderCache {
    block: OnceLock<Box<Block>>,
}

impl RenderCache {
    /// The rendered variables, once kept.
    pub(super) fn get(&self) -> Option<&Block> {
        self.block.get().map(|block| &**block)
    }

    /// Keeps `text` and its variables' `spans` (counted from `origin` in the text they come
    /// from) if `budget` has room and nothing is kept yet; otherwise does nothing.
    pub(super) fn offer(&self, text: &str, spans: &[Span], origin: usize, budget: &'static Budget) {
        if self.block.get().is_some() {
            return;
        }
        let Ok(origin) = u32::try_from(origin) else {
            return;
        };
        let Some(spans) = spans
            .iter()
            .map(|span| {
                Some(Span {
                    at: span.at.checked_sub(origin)?,
                    ..*span
                })
            })
            .collect::<Option<Box<[Span]>>>()
        else {
            return;
        };
        // What the block costs the process: its two allocations and the box around them.
        let cost = text.len() + std::mem::size_of_val(&*spans) + std::mem::size_of::<Block>();
        if !budget.take(cost) {
            return;
        }
        let block = Box::new(Block {
            text: text.into(),
            spans,
            cost,
            budget,
        });
        // Another review may have kept the same rendering first: this one is then dropped,
        // giving its bytes back.
        let _ = self.block.set(block);
    }
}

/// A copy of a Service is a new Service: it starts without a kept rendering (and so never
/// counts the same bytes twice).
impl Clone for RenderCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Whether a rendering is kept says nothing about the Service: all caches are equal.
impl PartialEq for RenderCache {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for RenderCache {}

impl fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderCache")
            .field("kept", &self.get().map(|block| block.text.len()))
            .finish()
    }
}
