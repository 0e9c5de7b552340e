//! Bounds on text that envlink repeats back to a caller.
//!
//! A Pod author writes the names envlink quotes in refusals and warnings; without a bound, a
//! Pod with fifty thousand names in an annotation makes a refusal of megabytes, repeated by
//! the API server to the client and into its audit log. So every echo is capped: one piece of
//! caller text at a few hundred bytes, a list at a few items with "and N more", a message at a
//! few KB, and the warnings of one answer at a fixed count.

use std::borrow::Cow;

/// Longest single piece of caller-supplied text (a name, a value) quoted in a message.
pub const ECHO_LIMIT: usize = 200;

/// Longest message (a refusal) in one answer.
pub const MESSAGE_LIMIT: usize = 4096;

/// Most items of a list quoted in one message.
pub const LIST_LIMIT: usize = 10;

/// Most warnings in one answer (the last says how many more there were).
pub const WARNING_LIMIT: usize = 20;

/// Longest single warning.
pub const WARNING_TEXT_LIMIT: usize = 1024;

/// At most `limit` bytes of `text`, cut at a character boundary, with `...` when cut.
pub fn clip(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &text[..end]))
}

/// `a, b, c and 47 more`: at most [`LIST_LIMIT`] items, each clipped to [`ECHO_LIMIT`].
pub fn list<I, S>(items: I, total: usize) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    let mut shown = 0;
    for item in items.into_iter().take(LIST_LIMIT) {
        if shown > 0 {
            out.push_str(", ");
        }
        out.push_str(&clip(item.as_ref(), ECHO_LIMIT));
        shown += 1;
    }
    if total > shown {
        out.push_str(&format!(" and {} more", total - shown));
    }
    out
}

/// The warnings of one answer: at most [`WARNING_LIMIT`], each at most
/// [`WARNING_TEXT_LIMIT`] bytes; when some are left out, the last says how many.
pub fn cap_warnings(mut warnings: Vec<String>) -> Vec<String> {
    for warning in &mut warnings {
        if warning.len() > WARNING_TEXT_LIMIT {
            *warning = clip(warning, WARNING_TEXT_LIMIT).into_owned();
        }
    }
    if warnings.len() > WARNING_LIMIT {
        let more = warnings.len() - (WARNING_LIMIT - 1);
        warnings.truncate(WARNING_LIMIT - 1);
        warnings.push(format!("envlink: and {more} more warnings (not listed)"));
    }
    warnings
}

/// Warnings collected for one answer, formatted only while they will be shown: a Pod with
/// forty thousand findings costs forty thousand counts, not forty thousand messages.
#[derive(Debug, Default)]
pub struct Warnings {
    list: Vec<String>,
    omitted: usize,
}

impl Warnings {
    /// Adds the warning `make` formats, if it will be shown; else counts it.
    pub fn push_with(&mut self, make: impl FnOnce() -> String) {
        if self.list.len() < WARNING_LIMIT {
            self.list.push(make());
        } else {
            self.omitted += 1;
        }
    }

    /// Adds a formatted warning.
    pub fn push(&mut self, warning: String) {
        self.push_with(|| warning);
    }

    /// The warnings to send: at most [`WARNING_LIMIT`], the last saying how many more there
    /// were.
    pub fn finish(mut self) -> Vec<String> {
        if self.omitted > 0 {
            // The last shown one makes way for the count, as in `cap_warnings`.
            self.list.pop();
            self.list.push(format!(
                "envlink: and {} more warnings (not listed)",
                self.omitted + 1
            ));
        }
        cap_warnings(self.list)
    }
}

/// Messages for one refusal, formatted only while they fit [`MESSAGE_LIMIT`].
#[derive(Debug, Default)]
pub struct Messages {
    parts: Vec<String>,
    bytes: usize,
    omitted: usize,
}

impl Messages {
    /// Adds the message `make` formats, if it will be shown; else counts it.
    pub fn push_with(&mut self, make: impl FnOnce() -> String) {
        if self.bytes <= MESSAGE_LIMIT {
            let message = make();
            self.bytes += message.len() + 2;
            self.parts.push(message);
        } else {
            self.omitted += 1;
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The messages joined by `sep` within [`MESSAGE_LIMIT`], saying how many were left out.
    pub fn join(&self, sep: &str) -> String {
        let mut out = String::new();
        let mut shown = 0;
        for part in &self.parts {
            let piece = clip(part, MESSAGE_LIMIT / 2);
            if shown > 0 && out.len() + sep.len() + piece.len() > MESSAGE_LIMIT {
                break;
            }
            if shown > 0 {
                out.push_str(sep);
            }
            out.push_str(&piece);
            shown += 1;
        }
        let left = self.parts.len() - shown + self.omitted;
        if left > 0 {
            out.push_str(&format!("{sep}and {left} more (not listed)"));
        }
        out
    }
}

/// A decoder's message in terms of the input: serde names the Rust type it wanted
/// (`expected struct GroupVersionKind`) and serde_json appends the position (` at line 1
/// column 94`), which the path in front of the message already gives.
pub fn decoder_message(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    };
    match message.find("expected struct ") {
        Some(at) => format!("{}expected an object", &message[..at]),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        let long = "é".repeat(150);
        let clipped = clip(&long, ECHO_LIMIT);
        assert!(clipped.len() <= ECHO_LIMIT + 3);
        assert!(clipped.ends_with("..."));
        assert_eq!(clip("short", ECHO_LIMIT), "short");
    }

    #[test]
    fn decoder_messages_name_the_input_not_the_type() {
        assert_eq!(
            decoder_message(
                "invalid type: string \"Pod\", expected struct GroupVersionKind at line 1 column 94"
            ),
            "invalid type: string \"Pod\", expected an object"
        );
        assert_eq!(
            decoder_message("missing field `uid`"),
            "missing field `uid`"
        );
    }

    #[test]
    fn collectors_format_only_what_is_shown() {
        let mut warnings = Warnings::default();
        let mut formatted = 0;
        for i in 0..10_000 {
            warnings.push_with(|| {
                formatted += 1;
                format!("w{i}")
            });
        }
        assert_eq!(formatted, WARNING_LIMIT);
        let list = warnings.finish();
        assert_eq!(list.len(), WARNING_LIMIT);
        assert_eq!(list[0], "w0");
        assert_eq!(
            list[WARNING_LIMIT - 1],
            format!(
                "envlink: and {} more warnings (not listed)",
                10_000 - WARNING_LIMIT + 1
            )
        );

        let mut messages = Messages::default();
        let mut formatted = 0;
        for i in 0..100_000 {
            messages.push_with(|| {
                formatted += 1;
                format!("message {i} {}", "x".repeat(100))
            });
        }
        assert!(formatted < 100, "{formatted}");
        let text = messages.join("; ");
        assert!(text.len() <= MESSAGE_LIMIT + 64, "{}", text.len());
        let shown = text.matches("message ").count();
        assert!(
            text.ends_with(&format!("and {} more (not listed)", 100_000 - shown)),
            "{}",
            &text[text.len() - 60..]
        );
    }

    #[test]
    fn lists_say_how_many_more() {
        let names: Vec<String> = (0..50_000).map(|i| format!("svc-{i}")).collect();
        let text = list(&names, names.len());
        assert!(text.starts_with("svc-0, svc-1, "));
        assert!(text.ends_with(" and 49990 more"));
        assert_eq!(list(["a", "b"], 2), "a, b");
    }

    #[test]
    fn warnings_are_bounded() {
        let messages: Vec<String> = (0..100_000)
            .map(|i| format!("{i}: {}", "x".repeat(2000)))
            .collect();
        let warnings = cap_warnings(messages);
        assert_eq!(warnings.len(), WARNING_LIMIT);
        assert_eq!(
            warnings[WARNING_LIMIT - 1],
            format!(
                "envlink: and {} more warnings (not listed)",
                100_000 - WARNING_LIMIT + 1
            )
        );
        assert!(warnings.iter().all(|w| w.len() <= WARNING_TEXT_LIMIT + 3));
    }
}
