//! Customer-controlled text made safe for a terminal or a line-oriented log.
//!
//! Certificate subjects, model names and versions, license names, service URLs and error
//! messages quoting file content all come from artifacts someone else wrote. Printed verbatim, a
//! newline in them forges a whole output or log line, ESC sequences recolour or clear the
//! terminal, and bidirectional overrides reorder what the reader sees. [`escape_controls`] makes
//! such text one visible line; [`to_json_text`] does the same for JSON output while keeping the
//! exact value.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a line-oriented log verbatim: C0 controls (newline,
/// carriage return, tab, ESC, ...), DEL, C1 controls (U+0080..U+009F, including the 8-bit CSI)
/// and the Unicode bidirectional overrides and isolates (which reorder what the reader sees).
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character (C0, DEL, C1) and bidirectional override written as a
/// visible escape (`\n`, `\r`, `\t`, `\x1b`, `\u{202e}`, ...), so that text chosen by a customer
/// (a certificate subject, a model name, a message) cannot start a new output line, move the
/// cursor, change colours or reorder what is shown. Borrowed when nothing needs escaping.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Pretty JSON whose strings carry every character exactly but with DEL, the C1 controls and the
/// bidirectional overrides written as `\uXXXX` escapes too (serde_json already escapes C0), so
/// the output is safe on a terminal and still parses to the same value.
pub fn to_json_text(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    if !text.chars().any(|c| is_unsafe(c) && c != '\n') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            // Outside strings JSON has only spaces and newlines, which are not escaped here.
            if c == '\n' {
                out.push(c);
            } else {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_borrowed() {
        assert!(matches!(
            escape_controls("CN=plain, O=Ünïcode"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("CN=a\nforged line\x1b[31m\r\t\u{7f}\u{9b}\u{202e}x"),
            "CN=a\\nforged line\\x1b[31m\\r\\t\\x7f\\x9b\\u{202e}x"
        );
    }

    #[test]
    fn json_text_escapes_c1_and_bidi_and_round_trips() {
        let v = serde_json::json!({"s": "a\nb\u{1b}[2J\u{9b}c\u{202e}d"});
        let text = to_json_text(&v);
        assert!(!text
            .chars()
            .any(|c| c == '\u{1b}' || c == '\u{9b}' || c == '\u{202e}'));
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
    }

    #[test]
    fn every_unsafe_class_is_escaped_and_safe_text_kept() {
        for c in [
            '\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}', '\u{202a}', '\u{202e}',
            '\u{2066}', '\u{2069}',
        ] {
            let s = format!("a{c}b");
            let e = escape_controls(&s);
            assert!(!e.chars().any(is_unsafe), "{s:?} -> {e:?}");
            assert!(e.starts_with('a') && e.ends_with('b'), "{e:?}");
        }
        // Ordinary non-ASCII text, including right-to-left letters, is untouched.
        for s in ["CN=Zoë, O=株式会社", "שלום", "emoji 🙂"] {
            assert!(matches!(escape_controls(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn json_text_without_unsafe_characters_is_serde_pretty() {
        let v = serde_json::json!({"a": [1, "x"], "b": "CN=Zoë"});
        assert_eq!(to_json_text(&v), serde_json::to_string_pretty(&v).unwrap());
    }
}
