//! Text the admin commands print and the service logs: customer-controlled strings made safe for
//! a terminal or a log file ([`escape_controls`]), and aligned tables ([`table`]).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a line-oriented log verbatim: C0 controls (newline,
/// carriage return, tab, ESC, ...), DEL, C1 controls (U+0080..U+009F, including the 8-bit CSI)
/// and the Unicode bidirectional overrides and isolates (which reorder what the reader sees).
fn is_unsafe(c: char) -> bool {
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

/// Formats rows under a header (none if `header` is empty) as columns separated by two spaces,
/// each as wide as its widest cell (counted in characters); the last column is not padded.
/// Cells are escaped with [`escape_controls`], so one row is always one line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let head = (!header.is_empty()).then(|| header.iter().map(|h| h.to_string()).collect());
    let cells: Vec<Vec<String>> = head
        .into_iter()
        .chain(rows.iter().map(|r| {
            r.iter()
                .map(|c| escape_controls(c).into_owned())
                .collect::<Vec<_>>()
        }))
        .collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < row.len() {
                let pad = widths[i] - c.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
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
    fn table_columns_align() {
        let t = table(
            &["a", "bb", "c"],
            &[
                vec!["host_ak_challenge".into(), "x".into(), "last".into()],
                vec!["add".into(), "yyyy\n".into(), "l".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        // "host_ak_challenge" is 17 characters: the second column starts at 19 on every line,
        // the third at 19 + len("yyyy\\n") + 2 = 27.
        for (l, second) in lines.iter().zip(["bb", "x", "yyyy\\n"]) {
            assert_eq!(&l[19..19 + second.len()], second, "{t}");
        }
        for (l, third) in lines.iter().zip(["c", "last", "l"]) {
            assert_eq!(&l[27..], third, "{t}");
        }
        assert!(lines[2].contains("yyyy\\n"), "{t}");
        assert_eq!(table(&[], &[vec!["k".into(), "v".into()]]), "k  v\n");
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
}
